"""judgefree.testing: material the test suite and the benchmarks share.

``baseline`` is two-path decoding written plainly on transformers (the engine's correctness
reference and the benchmarks' baseline); ``fake_engine`` a stand-in engine for driver tests;
``material`` fixed settings, records, pair stores and weight readers; ``fixtures`` the pytest
fixtures (loaded by tests/conftest.py); ``hostile`` the image files an adversarial user brings,
``holders`` other processes (a lock holder, a command to kill) and ``store_checks`` what a valid
store must satisfy, for the fault suite (tests/faults/).
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {})
