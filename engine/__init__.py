"""judgefree.engine: the two-path generation engine.

``Engine`` (engine.py) is the public entry point; ``types`` holds the records every stage
reads (Request, Completion, Pair, SamplingParams).
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "engine": ("Engine",),
    "config": ("EngineConfig",),
    "types": ("Completion", "Pair", "Request", "SamplingParams"),
})
