"""The deterministic backward of ``linear_logprobs``: bit-identical across runs and split counts.

No atomics. Two kernels, each program the only writer of its rows of a per-split partial buffer:
- grad_hidden: program (token block, vocab split) loops over its vocab blocks in order and adds
  each tile's d @ W into partial[split, rows, :];
- grad_weight: program (vocab block, token split) loops over its token blocks in order and adds
  each tile's d^T @ X into partial[split, cols, :].
The partials then are summed over the splits. To make that sum independent of how the work was
split (float addition is not associative), every tile's contribution is rounded once to a
fixed-point int64 (a power-of-two scale chosen from an a-priori bound of the whole gradient, so
no partial can overflow) and all adds are integer adds, which are exact. What a tile contributes
does not depend on the split, so neither does the result. Resolution: the bound / 2^60 per
tile (grad_hidden's bound is 2 max|g| max|W|, grad_weight's sum|g| max|X|).
Each tile's logits are recomputed twice (once per kernel): deterministic=True is slower.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from judgefree.kernels.linear_logprobs_filter import check_live
from judgefree.kernels.linear_logprobs_tiles import add_product, tile_d_logits, tile_is_live
from judgefree.kernels.linear_logprobs_triton import KernelConfig, _dot_precision, _splits, _upcast

FIXED_POINT_BITS = 60  # |partial| <= 2^60 < 2^63: int64 headroom for the rounding of each tile


@triton.jit
def _grad_hidden_kernel(
    hidden_ptr, weight_ptr, targets_ptr, lse_ptr, grad_ptr, live_ptr, part_ptr,
    N, V, H, stride_hn, stride_wv, v_blocks, splits, scale, filter_eps,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr, FILTER: tl.constexpr, PREFILTER: tl.constexpr,
):
    pid = tl.program_id(0)
    split = pid % splits  # splits side by side share the token block's X in L2
    pid_n = pid // splits
    rows = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_ok = rows < N
    targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    grad = tl.load(grad_ptr + rows, mask=row_ok, other=0.0)
    if tl.max(tl.abs(grad), axis=0) == 0.0:
        return  # the partial buffer starts at zero
    out = part_ptr + split.to(tl.int64) * N * H
    b_begin = split * v_blocks // splits
    b_end = (split + 1) * v_blocks // splits
    for pid_v in range(b_begin, b_end):  # in order: this program alone writes its rows of the partial
        if tile_is_live(live_ptr, pid_n, pid_v, v_blocks, PREFILTER):
            cols = (pid_v * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
            col_ok = cols < V
            d_logits, matters = tile_d_logits(hidden_ptr, weight_ptr, targets, lse, grad, rows, cols, row_ok,
                                              col_ok, H, stride_hn, stride_wv, filter_eps, BLOCK_N, BLOCK_V,
                                              BLOCK_H, UPCAST, DOT_PRECISION, FILTER)
            if matters:
                add_product(d_logits, weight_ptr, cols, col_ok, stride_wv, out, rows, row_ok, H, H, scale,
                            BLOCK_H, UPCAST, DOT_PRECISION, True)


@triton.jit
def _grad_weight_kernel(
    hidden_ptr, weight_ptr, targets_ptr, lse_ptr, grad_ptr, live_ptr, part_ptr,
    N, V, H, stride_hn, stride_wv, n_blocks, splits, scale, filter_eps,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr, FILTER: tl.constexpr, PREFILTER: tl.constexpr,
):
    pid = tl.program_id(0)
    split = pid % splits  # splits side by side share the vocab block's W in L2
    pid_v = pid // splits
    v_blocks = tl.cdiv(V, BLOCK_V)
    cols = (pid_v * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
    col_ok = cols < V
    out = part_ptr + split.to(tl.int64) * V * H
    b_begin = split * n_blocks // splits
    b_end = (split + 1) * n_blocks // splits
    for pid_n in range(b_begin, b_end):  # in order: this program alone writes its rows of the partial
        rows = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        row_ok = rows < N
        targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1)
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
        grad = tl.load(grad_ptr + rows, mask=row_ok, other=0.0)
        if (tl.max(tl.abs(grad), axis=0) != 0.0) & tile_is_live(live_ptr, pid_n, pid_v, v_blocks, PREFILTER):
            d_logits, matters = tile_d_logits(hidden_ptr, weight_ptr, targets, lse, grad, rows, cols, row_ok,
                                              col_ok, H, stride_hn, stride_wv, filter_eps, BLOCK_N, BLOCK_V,
                                              BLOCK_H, UPCAST, DOT_PRECISION, FILTER)
            if matters:
                add_product(tl.trans(d_logits), hidden_ptr, rows, row_ok, stride_hn, out, cols, col_ok, H, H, scale,
                            BLOCK_H, UPCAST, DOT_PRECISION, True)


def fixed_point_scale(bound: float) -> float:
    """2^k with bound * 2^k <= 2^FIXED_POINT_BITS (k clamped so the scale is a normal float32)."""
    if not math.isfinite(bound):
        raise ValueError(f"deterministic linear_logprobs needs finite inputs and gradients (bound {bound})")
    exponent = FIXED_POINT_BITS - math.ceil(math.log2(max(bound, 2.0**-100)))
    return 2.0 ** max(-120, min(120, exponent))


def deterministic_backward_grads(
    hidden: torch.Tensor, weight: torch.Tensor, safe_targets: torch.Tensor, lse: torch.Tensor,
    grad: torch.Tensor, config: KernelConfig, need_hidden: bool, need_weight: bool,
    filter_eps: float | None = None, scales: tuple[float, float] | None = None, live: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """grad_hidden and grad_weight (float32) without atomics, bit-identical across runs and
    across ``config.vocab_splits`` / ``config.token_splits``. ``scales``: the fixed-point
    scales of the two gradients (default: from their bounds; the build cases, whose stand-in
    tensors hold no values, pass them). ``live``: the forward's tile verdicts (``live_tiles``),
    a deterministic function of the forward, so skipping dead tiles keeps the bit-identity."""
    n_tokens, hidden_size = hidden.shape
    vocab = weight.shape[0]
    n_blocks, v_blocks = triton.cdiv(n_tokens, config.block_n), triton.cdiv(vocab, config.block_v)
    check_live(live, n_blocks, v_blocks)
    if scales is None:
        g_max = float(grad.abs().max()) if n_tokens else 0.0
        # |dX[n, h]| <= |g_n| * sum_v |onehot - p| * max|W| <= 2 max|g| max|W|, and so is any
        # partial sum; |dW[v, h]| <= sum_n |g_n| |onehot - p| |X[n, h]| <= sum|g| max|X|.
        scales = (fixed_point_scale(2.0 * g_max * float(weight.abs().max())) if need_hidden else 1.0,
                  fixed_point_scale(float(grad.abs().sum()) * float(hidden.abs().max())) if need_weight else 1.0)
    common = dict(BLOCK_N=config.block_n, BLOCK_V=config.block_v, BLOCK_H=config.block_h,
                  UPCAST=_upcast(hidden.dtype), DOT_PRECISION=_dot_precision(hidden.dtype),
                  FILTER=filter_eps is not None and live is None, PREFILTER=live is not None,
                  num_warps=config.num_warps, num_stages=config.num_stages)
    eps = float(filter_eps or 0.0)
    grad_hidden = grad_weight = None
    if need_hidden:
        scale = scales[0]
        splits = _splits(config.vocab_splits, n_blocks, v_blocks, hidden.device,
                         config.block_n * hidden_size * hidden.element_size())
        part = torch.zeros((splits, n_tokens, hidden_size), dtype=torch.int64, device=hidden.device)
        _grad_hidden_kernel[(n_blocks * splits,)](
            hidden, weight, safe_targets, lse, grad, lse if live is None else live, part, n_tokens, vocab, hidden_size,
            hidden.stride(0), weight.stride(0), v_blocks, splits, scale, eps, **common)
        grad_hidden = (part.sum(dim=0).to(torch.float64) / scale).to(torch.float32)
    if need_weight:
        scale = scales[1]
        splits = _splits(config.token_splits, v_blocks, n_blocks, hidden.device,
                         config.block_v * hidden_size * weight.element_size())
        part = torch.zeros((splits, vocab, hidden_size), dtype=torch.int64, device=hidden.device)
        _grad_weight_kernel[(v_blocks * splits,)](
            hidden, weight, safe_targets, lse, grad, lse if live is None else live, part, n_tokens, vocab, hidden_size,
            hidden.stride(0), weight.stride(0), n_blocks, splits, scale, eps, **common)
        grad_weight = (part.sum(dim=0).to(torch.float64) / scale).to(torch.float32)
    return grad_hidden, grad_weight
