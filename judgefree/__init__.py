"""judgefree: judge-free self-improvement of multimodal LLMs.

Each stage is a subpackage, listed in the order the data flows (docs/architecture.md):
``judgefree.kernels`` (Triton kernels and their PyTorch references), ``judgefree.engine``
(two-path generation), ``judgefree.generation`` (pair planning and the generation driver),
``judgefree.store`` (the pair store), ``judgefree.curate`` (CLIP verification),
``judgefree.train`` (DPO), ``judgefree.evaluation`` (CHAIR), ``judgefree.pipeline`` (the
improve loop and the demo), ``judgefree.cli`` (the command). ``judgefree.assets`` builds
checkpoints and photos for tests and demos; ``judgefree.testing`` holds test material.
"""

__version__ = "0.1.0"
