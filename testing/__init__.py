"""judgefree.testing: material the test suite and the benchmarks share.

``baseline`` is two-path decoding written plainly on transformers (the engine's correctness
reference and the benchmarks' baseline); ``fake_engine`` a stand-in engine for driver tests;
``material`` fixed settings, records, pair stores and weight readers; ``fixtures`` the pytest
fixtures (loaded by tests/conftest.py).
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {})
