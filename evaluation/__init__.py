"""judgefree.evaluation: hallucination evaluation.

``chair`` (CHAIRs / CHAIRi / recall, Rohrbach et al. 2018) over captions, with ground truth
from COCO annotations (``coco_truth``) and the shipped synonym table (``vocabulary``);
``halbench`` answers Object HalBench questions with the engine; ``compare`` puts two models'
scores side by side. The ``judgefree eval`` command drives all three.
"""
