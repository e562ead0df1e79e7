"""judgefree.pipeline: what runs several stages in turn.

``loop`` is the self-improvement loop (generate -> curate -> train -> evaluate per round,
each stage resumable); ``demo`` is ``judgefree improve --demo``.
"""

from judgefree._lazy import lazy_exports

_EXPORTS = {
    "Loop": "loop",
    "LoopSettings": "loop",
    "EvalSettings": "loop",
    "RoundReport": "loop",
    "run_demo": "demo",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
