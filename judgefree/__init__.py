"""judgefree: judge-free self-improvement of multimodal LLMs.

Subpackages: ``judgefree.kernels`` (Triton kernels and their PyTorch references),
``judgefree.engine`` (two-path generation), ``judgefree.curate`` (CLIP verification and the
pair store), ``judgefree.train`` (DPO), ``judgefree.evaluation`` (CHAIR).
"""

__version__ = "0.1.0"
