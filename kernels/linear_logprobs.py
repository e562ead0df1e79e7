"""``linear_logprobs``: per-token log p(target) through the lm_head, for DPO.

Computing the [tokens, vocab] logits to read one number per token is the memory wall of
preference training; both backends here keep O(N) extra memory (plus the weight gradient):
Triton kernels on CUDA (``linear_logprobs_triton``), a chunked PyTorch path elsewhere
(``linear_logprobs_torch``); both are tested against the plain formula in ``linear_logprobs_ref``.
"""

from __future__ import annotations

from typing import Literal

import torch

from judgefree.kernels._backend import resolve_backend
from judgefree.kernels.linear_logprobs_torch import linear_logprobs_chunked

Backend = Literal["auto", "triton", "torch"]
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FILTER_EPS = 2.0**-12  # a documented filtering threshold (see ``linear_logprobs``)


def linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = -100,
    backend: Backend = "auto",
    deterministic: bool = False,
    filter_eps: float | None = None,
) -> torch.Tensor:
    """log_softmax(hidden @ weight.T)[i, targets[i]] as float32 [N], without [N, V] logits.

    ``hidden`` [N, H], ``weight`` [V, H] (same float dtype), ``targets`` [N] integer ids;
    positions equal to ``ignore_index`` give 0 and no gradient. Differentiable in ``hidden``
    and ``weight``. ``backend="auto"`` runs Triton on CUDA tensors and PyTorch elsewhere;
    ``"triton"`` also runs on CPU tensors under TRITON_INTERPRET=1. float64 inputs (torch
    backend only) give a float64 result.

    ``deterministic=True``: the Triton backward uses no atomics and gives bit-identical
    gradients across runs and split counts (slower; see ``linear_logprobs_deterministic``).
    The PyTorch path has no atomics either way.

    ``filter_eps``: gradient filtering (Cut Cross-Entropy's idea). A (row, vocab tile) pair
    whose every |onehot - softmax| is below ``filter_eps`` is dropped; the forward decides it
    (``linear_logprobs_filter``) and the backward packs each vocab tile's live rows into dense
    blocks (``linear_logprobs_pack``), so a dropped pair is not even recomputed (deterministic:
    whole dead [token block, vocab block] tiles are skipped instead). Bound: the dropped part of grad_hidden[n, h] is at most
    |g_n| * max_v |W[v, h]| * (sum of the skipped |onehot - p_nv|, each < filter_eps), and of
    grad_weight[v, h] at most sum_n |g_n| |X[n, h]| |onehot - p_nv| over the skipped entries;
    the forward values are unaffected. ``FILTER_EPS`` (2^-12) is a threshold below bf16's
    resolution of the largest entries (|onehot - p| up to 1). None (the default) is exact;
    the PyTorch path ignores it (exact is within any bound).
    """
    targets = _validate(hidden, weight, targets, ignore_index)
    if filter_eps is not None and not 0.0 < filter_eps < 1.0:
        raise ValueError(f"filter_eps must be None or in (0, 1), got {filter_eps}")
    if backend == "triton" and hidden.dtype not in _TRITON_DTYPES:
        raise ValueError(f"backend='triton' takes float16/bfloat16/float32 hidden, got {hidden.dtype}")
    if backend == "auto" and hidden.dtype not in _TRITON_DTYPES:
        backend = "torch"  # float64: the kernels do not take it
    backend = resolve_backend(backend, hidden)
    if hidden.shape[0] == 0:
        out_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        return (hidden.sum(1) + weight.sum() * 0).to(out_dtype)  # empty, still in the graph
    if backend == "torch":
        return linear_logprobs_chunked(hidden, weight, targets, ignore_index)
    from judgefree.kernels.linear_logprobs_triton import linear_logprobs_triton

    return linear_logprobs_triton(hidden, weight, targets, ignore_index, deterministic=deterministic,
                                  filter_eps=filter_eps)


def _validate(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Check shapes, dtypes, devices and target ids; return the targets as int64."""
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be 2-D [N, H], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[0] == 0:
        raise ValueError(f"weight must be 2-D [V, H] with V >= 1, got shape {tuple(weight.shape)}")
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"weight's hidden size {weight.shape[1]} != hidden's {hidden.shape[1]}")
    if hidden.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"hidden must be a float tensor, got {hidden.dtype}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}")
    if targets.dim() != 1 or targets.shape[0] != hidden.shape[0]:
        raise ValueError(f"targets must be 1-D of length N={hidden.shape[0]}, got shape {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer token ids, got {targets.dtype}")
    if not (hidden.device == weight.device == targets.device):
        raise ValueError(
            f"hidden, weight and targets must share a device, got {hidden.device}, {weight.device}, {targets.device}"
        )
    targets = targets.to(torch.int64)
    out_of_range = (targets != ignore_index) & ((targets < 0) | (targets >= weight.shape[0]))
    if bool(out_of_range.any()):
        bad = int(targets[out_of_range][0])
        raise ValueError(
            f"targets holds id {bad} outside [0, {weight.shape[0]}) that is not ignore_index={ignore_index}"
        )
    return targets
