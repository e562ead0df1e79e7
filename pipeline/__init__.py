"""judgefree.pipeline: what runs several stages in turn.

``loop`` is the self-improvement loop (generate -> curate -> train -> evaluate per round,
each stage resumable); ``demo`` is ``judgefree improve --demo`` (the world), ``demo_smollm2`` the earlier
SmolLM2 demo, ``report`` the demo's rounds.json / plot / HTML page.
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "loop": ("Loop", "LoopSettings", "EvalSettings", "RoundReport"),
    "demo": ("run_demo",),
})
