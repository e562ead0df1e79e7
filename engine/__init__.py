"""judgefree.engine: the two-path generation engine.

``Engine`` (engine.py) is the public entry point; ``types`` holds the records every stage
reads (Request, Completion, Pair, SamplingParams).
"""

from judgefree._lazy import lazy_exports

_EXPORTS = {
    "Engine": "engine",
    "EngineConfig": "config",
    "Completion": "types",
    "Pair": "types",
    "Request": "types",
    "SamplingParams": "types",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
