"""Fused two-path mix + sample: the token-picking step of two-path decoding.

``mix_sample`` takes the conditional and unconditional logits of a decode step and returns
each row's token, its log-probability under the distribution it was drawn from, and the
conditional path's own log-probability (the DPO reference). On CUDA it is one Triton launch
(``mix_sample_triton``); elsewhere the PyTorch reference (``mix_sample_ref``). Semantics and
the kernel's design: docs/mix_sample.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from judgefree.kernels._backend import resolve_backend
from judgefree.kernels.mix_sample_ref import (
    FLAG_C_EMPTY,
    FLAG_C_NONFINITE,
    FLAG_U_EMPTY,
    FLAG_U_NEG_INF_KEPT,
    FLAG_U_NONFINITE,
    log_beta_rows,
    mix_sample_reference,
    row_flags,
)

MODES = ("mix", "contrast")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FLAG_MESSAGES = (
    (FLAG_C_NONFINITE, "logits_c row {row} contains NaN or +inf"),
    (FLAG_U_NONFINITE, "logits_u row {row} contains NaN or +inf (the row's unconditional weight is > 0)"),
    (FLAG_C_EMPTY, "logits_c row {row} has no finite entry (all -inf)"),
    (FLAG_U_EMPTY, "logits_u row {row} has no finite entry (all -inf) but its h is > 0"),
    (FLAG_U_NEG_INF_KEPT, "logits_u row {row} is -inf at a token the contrast plausibility cut keeps: "
                          "contrastive decoding would give that token infinite weight"),
)


class MixSample(NamedTuple):
    tokens: torch.Tensor  # int64 [B]
    logprobs: torch.Tensor  # fp32 [B], log-prob under the final (filtered, renormalised) distribution
    cond_logprobs: torch.Tensor  # fp32 [B], log_softmax(logits_c)[token] at temperature 1
    flags: torch.Tensor  # int32 [B], bad-input bits per row (0: fine); see raise_for_flags


def mix_sample(
    logits_c: torch.Tensor,
    logits_u: torch.Tensor | None,
    h: float | torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    seeds: int | torch.Tensor,
    step: int | torch.Tensor,
    mode: str | Sequence[str] = "mix",
    alpha: float | torch.Tensor = 1.0,
    beta: float | torch.Tensor = 0.1,
    validate: bool = True,
    backend: str = "auto",
    has_top_p: bool | None = None,
) -> MixSample:
    """Pick one token per row from the two-path distribution.

    mode "mix": p = (1-h) softmax(l_c/T) + h softmax(l_u/T). mode "contrast" (VCD): logits
    (1+alpha) l_c - alpha l_u over tokens with p_cond >= beta * max p_cond (h unused). Then
    top-k, then top-p on the renormalised rest, then an exact draw (temperature 0: argmax).
    ``mode`` is one for all rows or one per row (mix and contrast rows in one batch); every
    other parameter is a scalar or a [B] tensor. Rows whose unconditional weight (h, or alpha
    in contrast mode) is 0 never read ``logits_u``. ``step`` (an int, or one per row) is the
    row's decode step: tokens are a pure function of (seed, step, row inputs).
    ``validate=False`` skips the host-side checks (and their device syncs): the caller
    checked the parameters, and reads ``flags`` (``raise_for_flags``) when it copies the
    results to the host anyway. ``has_top_p`` tells the kernel from the host whether any row
    has top_p < 1 (None: known from a number, assumed for a tensor); False skips the top-p
    candidate path's three launches (3, 3b and 4).
    """
    batch, vocab = _check_logits(logits_c, logits_u)
    device = logits_c.device
    contrast, any_contrast = _contrast_rows(mode, batch, device)
    h_t = _per_row(h, batch, torch.float32, device, "h")
    temp_t = _per_row(temperature, batch, torch.float32, device, "temperature")
    top_k_t = _per_row(top_k, batch, torch.int32, device, "top_k")
    top_p_t = _per_row(top_p, batch, torch.float32, device, "top_p")
    alpha_t = _per_row(alpha, batch, torch.float32, device, "alpha")
    beta_t = _per_row(beta, batch, torch.float32, device, "beta")
    seeds_t = _per_row(seeds, batch, torch.int64, device, "seeds")
    if isinstance(step, int) and not isinstance(step, bool) and not 0 <= step < 2**31:
        raise ValueError(f"step must lie in [0, 2**31), got {step}")
    steps_t = _per_row(step, batch, torch.int64, device, "step")
    if isinstance(beta, (int, float)) and not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must lie in (0, 1], got {beta}")
    weight_u = torch.where(contrast, alpha_t, h_t)  # the unconditional path's weight per row
    if validate:
        _check_params(h_t, temp_t, top_k_t, top_p_t, alpha_t, beta_t, steps_t)
        if logits_u is None and bool((weight_u > 0).any()):
            row = int((weight_u > 0).nonzero()[0])
            name = "alpha" if bool(contrast[row]) else "h"
            raise ValueError(f"logits_u is None but {name} is > 0 at row {row}")

    if resolve_backend(backend, logits_c) == "triton":
        from judgefree.kernels.mix_sample_triton import mix_sample_triton

        tokens, logprobs, cond, flags = mix_sample_triton(
            logits_c, logits_u, weight_u, temp_t, top_k_t, top_p_t, seeds_t, steps_t.to(torch.int32),
            contrast, log_beta_rows(beta_t, batch, device), has_contrast=any_contrast,
            has_top_p=(not isinstance(top_p, (int, float)) or top_p < 1) if has_top_p is None else has_top_p)
        if validate:
            raise_for_flags(flags)
        return MixSample(tokens, logprobs, cond, flags)

    flags = row_flags(logits_c, logits_u, weight_u, contrast, beta_t)
    if validate:
        raise_for_flags(flags)
    tokens, logprobs, cond = mix_sample_reference(
        logits_c, logits_u, h_t, temp_t, top_k_t, top_p_t, seeds_t, steps_t,
        mode=contrast, alpha=alpha_t, beta=beta_t)
    return MixSample(tokens, logprobs, cond, flags)


def _contrast_rows(mode, batch: int, device: torch.device) -> tuple[torch.Tensor, bool]:
    """bool [B] on ``device`` (True for contrast rows), and whether any row contrasts."""
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return torch.full((batch,), mode == "contrast", dtype=torch.bool, device=device), mode == "contrast"
    modes = list(mode)
    if len(modes) != batch:
        raise ValueError(f"mode must be one string or one per row ({batch}), got {len(modes)}")
    for row, value in enumerate(modes):
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r} at row {row}")
    rows = [m == "contrast" for m in modes]
    return torch.tensor(rows, dtype=torch.bool).to(device, non_blocking=True), any(rows)


def _check_logits(logits_c: torch.Tensor, logits_u: torch.Tensor | None) -> tuple[int, int]:
    if not isinstance(logits_c, torch.Tensor) or logits_c.dim() != 2:
        raise ValueError(f"logits_c must be a 2-D tensor [B, V], got {_describe(logits_c)}")
    if logits_c.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"logits_c must be float32, float16 or bfloat16, got {logits_c.dtype}")
    if logits_c.shape[0] == 0 or logits_c.shape[1] == 0:
        raise ValueError(f"logits_c must be non-empty, got shape {tuple(logits_c.shape)}")
    if logits_u is not None:
        if not isinstance(logits_u, torch.Tensor) or logits_u.shape != logits_c.shape:
            raise ValueError(
                f"logits_u must have the shape of logits_c {tuple(logits_c.shape)}, got {_describe(logits_u)}")
        if logits_u.dtype != logits_c.dtype:
            raise ValueError(f"logits_u dtype {logits_u.dtype} differs from logits_c dtype {logits_c.dtype}")
        if logits_u.device != logits_c.device:
            raise ValueError(f"logits_u is on {logits_u.device} but logits_c is on {logits_c.device}")
    return logits_c.shape[0], logits_c.shape[1]


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _per_row(value, batch: int, dtype: torch.dtype, device: torch.device, name: str) -> torch.Tensor:
    """A scalar or a [B] tensor as a contiguous [B] tensor of ``dtype`` on ``device``."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            value = value.reshape(1).expand(batch)
        if value.shape != (batch,):
            raise ValueError(f"{name} must be a scalar or a tensor of shape [{batch}], got shape {tuple(value.shape)}")
        if dtype.is_floating_point is False and value.dtype.is_floating_point:
            raise ValueError(f"{name} must hold integers, got {value.dtype}")
        return value.to(device=device, dtype=dtype).contiguous()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if not dtype.is_floating_point and not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return torch.full((batch,), value, dtype=dtype, device=device)


def _first_bad_row(bad: torch.Tensor) -> int | None:
    rows = bad.nonzero()
    return int(rows[0]) if rows.numel() else None


def _check_params(h, temperature, top_k, top_p, alpha, beta, steps) -> None:
    checks = (
        (steps, ~((steps >= 0) & (steps < 2**31)), "step must lie in [0, 2**31)"),
        (h, ~((h >= 0) & (h <= 1)), "h must lie in [0, 1]"),
        (temperature, ~((temperature >= 0) & torch.isfinite(temperature)), "temperature must be finite and >= 0"),
        (top_k, top_k < 0, "top_k must be >= 0 (0 disables it)"),
        (top_p, ~((top_p > 0) & (top_p <= 1)), "top_p must lie in (0, 1]"),
        (alpha, ~((alpha >= 0) & torch.isfinite(alpha)), "alpha must be finite and >= 0"),
        (beta, ~((beta > 0) & (beta <= 1)), "beta must lie in (0, 1]"),
    )
    if not bool(torch.stack([bad for _, bad, _ in checks]).any()):  # one device sync when all is well
        return
    for values, bad, message in checks:
        row = _first_bad_row(bad)
        if row is not None:
            raise ValueError(f"{message}: got {values[row].item()} at row {row}")


def raise_for_flags(flags: torch.Tensor | Sequence[int]) -> None:
    """ValueError naming the first row whose bad-input flags (``MixSample.flags``, a tensor or
    a host list) are set, and what is wrong with it; nothing when all are 0."""
    flags = torch.as_tensor(flags)
    row = _first_bad_row(flags != 0)
    if row is None:
        return
    value = int(flags[row])
    for bit, message in _FLAG_MESSAGES:
        if value & bit:
            raise ValueError(message.format(row=row))
