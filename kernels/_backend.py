"""Choosing between a Triton kernel and its PyTorch reference."""

from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "triton", "torch")


def triton_interpreting() -> bool:
    """True when Triton kernels run through the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"`` for a kernel whose inputs live where ``tensor`` does.

    auto: Triton on CUDA tensors, the PyTorch reference elsewhere. "triton" on CPU tensors is
    allowed only under the interpreter (that is how the test suite exercises the kernels).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if tensor.is_cuda else "torch"
    if backend == "triton" and not tensor.is_cuda and not triton_interpreting():
        raise ValueError(
            "backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before the first "
            "kernel import to run the kernel on the CPU through the interpreter"
        )
    return backend
