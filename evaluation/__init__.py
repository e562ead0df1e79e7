"""judgefree.evaluation: hallucination evaluation.

``chair`` (CHAIRs / CHAIRi / recall, Rohrbach et al. 2018, or Object HalBench's protocol as
RLHF-V computes it: docs/chair.md) over captions, with ground truth
from COCO annotations (``coco_truth``) and the shipped synonym table (``vocabulary``);
``halbench`` answers Object HalBench questions with the engine; ``compare`` puts two models'
scores side by side. The ``judgefree eval`` command drives all three.
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "chair": ("evaluate_captions", "ChairReport"),
    "compare": ("format_comparison",),
})
