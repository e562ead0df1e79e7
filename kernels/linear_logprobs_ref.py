"""Per-token log p(target) through the lm_head, written plainly: the definition.

``linear_logprobs_eager`` materialises the full [N, V] logits. Every implementation of
``linear_logprobs`` (the chunked PyTorch path, the Triton kernels) is tested against it.
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64 (gradcheck), everything else uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def linear_logprobs_eager(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Ground truth ``log_softmax(hidden @ weight.T).gather(targets)``, in float32 or float64.

    Materialises the full [N, V] logits; ignored positions give 0 and no gradient.
    """
    dtype = compute_dtype(hidden.dtype)
    logits = hidden.to(dtype) @ weight.to(dtype).T
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, 0)
    picked = torch.log_softmax(logits, dim=-1).gather(1, safe_targets[:, None]).squeeze(1)
    return torch.where(valid, picked, torch.zeros_like(picked))
