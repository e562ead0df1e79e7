"""DPO losses on per-sequence log-probabilities, with the formulas of TRL's DPOTrainer.

The policy's per-token log-probs come from ``judgefree.kernels.linear_logprobs``; the
reference's are the seed model's log p_cond recorded during generation (no reference model
runs). ``sequence_logprobs`` sums (or averages) them over each response.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


@dataclass(slots=True)
class SequenceLogprobs:
    """Per-sequence log-probabilities: ``sums`` [B], ``means`` [B] (length-normalised,
    what TRL feeds the IPO loss) and ``lengths`` [B], the number of scored tokens."""

    sums: torch.Tensor
    means: torch.Tensor
    lengths: torch.Tensor


def sequence_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor) -> SequenceLogprobs:
    """Sum and mean of ``token_logprobs`` [B, T] over the positions where ``mask`` [B, T] is set.

    Every row must select at least one token (a response with nothing to score is a data bug).
    """
    if token_logprobs.dim() != 2:
        raise ValueError(f"token_logprobs must be 2-D [B, T], got shape {tuple(token_logprobs.shape)}")
    if mask.shape != token_logprobs.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != token_logprobs shape {tuple(token_logprobs.shape)}")
    if not token_logprobs.dtype.is_floating_point:
        raise ValueError(f"token_logprobs must be a float tensor, got {token_logprobs.dtype}")
    mask = mask.to(torch.bool)
    lengths = mask.sum(dim=1)
    if bool((lengths == 0).any()):
        empty = int(torch.nonzero(lengths == 0)[0, 0])
        raise ValueError(f"mask row {empty} selects no token: every sequence needs at least one")
    # where() rather than multiply: masked-out entries may be -inf or nan (padding).
    sums = torch.where(mask, token_logprobs, torch.zeros((), dtype=token_logprobs.dtype,
                                                          device=token_logprobs.device)).sum(dim=1)
    return SequenceLogprobs(sums=sums, means=sums / lengths.to(sums.dtype), lengths=lengths)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss (mean over pairs) and the detached rewards beta * (policy - ref), as TRL returns.

    Inputs are per-sequence log-probs [B] (sums; TRL's "ipo" uses the means). ``label_smoothing``
    is the assumed fraction of flipped labels (cDPO) for "sigmoid" and "robust".
    """
    _validate(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, loss_type, label_smoothing)
    # logits = (log pi(y_w) - log pi(y_l)) - (log ref(y_w) - log ref(y_l))
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    eps = label_smoothing
    if loss_type == "sigmoid":
        # TRL sigmoid: -logsigmoid(b*logits)*(1-eps) - logsigmoid(-b*logits)*eps (paper Eq. 1 at eps=0)
        losses = -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
    elif loss_type == "robust":
        # TRL robust: (-logsigmoid(b*logits)*(1-eps) + logsigmoid(-b*logits)*eps) / (1-2*eps)
        losses = (-F.logsigmoid(beta * logits) * (1 - eps) + F.logsigmoid(-beta * logits) * eps) / (1 - 2 * eps)
    elif loss_type == "hinge":
        # TRL hinge (RSO): relu(1 - b*logits)
        losses = torch.relu(1 - beta * logits)
    else:
        # TRL ipo (IPO paper Eq. 17, beta = tau): (logits - 1/(2*b))**2
        losses = (logits - 1 / (2 * beta)) ** 2
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses.mean(), chosen_rewards, rejected_rewards


def _validate(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str,
    label_smoothing: float,
) -> None:
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if loss_type == "sigmoid" and not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5] for loss_type='sigmoid', got {label_smoothing}")
    if loss_type == "robust" and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5) for loss_type='robust', got {label_smoothing}")
    if loss_type in ("ipo", "hinge") and label_smoothing != 0.0:
        raise ValueError(f"label_smoothing is not defined for loss_type={loss_type!r}; got {label_smoothing}")
    named = {"policy_chosen": policy_chosen, "policy_rejected": policy_rejected,
             "ref_chosen": ref_chosen, "ref_rejected": ref_rejected}
    for name, tensor in named.items():
        if tensor.dim() != 1 or tensor.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor [B], got shape {tuple(tensor.shape)}")
        if tensor.shape != policy_chosen.shape:
            raise ValueError(f"{name} shape {tuple(tensor.shape)} != policy_chosen shape {tuple(policy_chosen.shape)}")
        if not tensor.dtype.is_floating_point:
            raise ValueError(f"{name} must be a float tensor, got {tensor.dtype}")
