"""Tile helpers shared by the linear_logprobs kernels (``linear_logprobs_triton`` and
``linear_logprobs_deterministic``): one [BLOCK_N, BLOCK_V] logit tile, its d logp / d logits =
onehot - softmax, and the dX / dW products of a tile (``add_product``: relaxed atomics in the
fast backward, int64 fixed point in the deterministic one), so both backwards run one body.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def logit_tile(
    hidden_ptr, weight_ptr, rows, cols, row_ok, col_ok, H, stride_hn, stride_wv,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """[BLOCK_N, BLOCK_V] float32 logits hidden[rows] @ weight[cols].T, looping over H."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        ks = h0 + tl.arange(0, BLOCK_H)
        k_ok = ks < H
        x = tl.load(hidden_ptr + rows[:, None] * stride_hn + ks[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(weight_ptr + cols[:, None] * stride_wv + ks[None, :],
                    mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:  # the interpreter's bf16 tl.dot is wrong: multiply in float32 there
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def grad_logit_tile(
    hidden_ptr, weight_ptr, targets, lse, rows, cols, row_ok, col_ok, H, stride_hn, stride_wv,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """onehot - softmax on one tile, recomputed from the saved log-sum-exp (0 off the vocab)."""
    logits = logit_tile(hidden_ptr, weight_ptr, rows, cols, row_ok, col_ok, H, stride_hn, stride_wv,
                        BLOCK_N, BLOCK_V, BLOCK_H, UPCAST, DOT_PRECISION)
    probs = tl.where(col_ok[None, :], tl.exp(logits - lse[:, None]), 0.0)
    onehot = tl.where(cols[None, :] == targets[:, None], 1.0, 0.0)
    return onehot - probs


@triton.jit
def tile_matters(delta, grad, filter_eps, FILTER: tl.constexpr):
    """False when gradient filtering is on and every |onehot - softmax| of the tile's rows
    that carry gradient is below ``filter_eps``: the tile's d logits are dropped."""
    if FILTER:
        live = tl.where((grad != 0.0)[:, None], tl.abs(delta), 0.0)
        return tl.max(tl.max(live, axis=1), axis=0) >= filter_eps
    else:
        return True


@triton.jit
def tile_d_logits(
    hidden_ptr, weight_ptr, targets, lse, grad, rows, cols, row_ok, col_ok, H, stride_hn, stride_wv,
    filter_eps, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr, FILTER: tl.constexpr,
):
    """d logits = g (onehot - softmax) of one tile, in the input dtype for the tensor cores
    (float32 accumulation), and whether the tile survives gradient filtering."""
    delta = grad_logit_tile(hidden_ptr, weight_ptr, targets, lse, rows, cols, row_ok, col_ok, H,
                            stride_hn, stride_wv, BLOCK_N, BLOCK_V, BLOCK_H, UPCAST, DOT_PRECISION)
    matters = tile_matters(delta, grad, filter_eps, FILTER)
    d_logits = delta * grad[:, None]
    if not UPCAST:
        d_logits = d_logits.to(hidden_ptr.dtype.element_ty)
    return d_logits, matters


@triton.jit
def add_product(
    a, src_ptr, src_idx, src_ok, stride_src, out_ptr, out_idx, out_ok, stride_out, H, scale,
    BLOCK_H: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr, FIXED_POINT: tl.constexpr,
):
    """out[out_idx, :] += a @ src[src_idx, :], BLOCK_H columns at a time: grad_hidden with
    a = d logits and src = W, grad_weight with a = d logits^T and src = X.

    FIXED_POINT=False: float32 relaxed atomics (the adds commute: plain REDG reductions, no
    fences). FIXED_POINT=True (the deterministic backward, whose program is the only writer of
    its rows): int64 read-modify-write of round(part * scale), exact and order-free."""
    for h0 in range(0, H, BLOCK_H):
        ks = h0 + tl.arange(0, BLOCK_H)
        k_ok = ks < H
        src = tl.load(src_ptr + src_idx[:, None] * stride_src + ks[None, :],
                      mask=src_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:
            src = src.to(tl.float32)
        part = tl.dot(a, src, input_precision=DOT_PRECISION)
        ptrs = out_ptr + out_idx[:, None] * stride_out + ks[None, :]
        mask = out_ok[:, None] & k_ok[None, :]
        if FIXED_POINT:
            acc = tl.load(ptrs, mask=mask, other=0)
            tl.store(ptrs, acc + (part * scale).to(tl.int64), mask=mask)
        else:
            tl.atomic_add(ptrs, part, mask=mask, sem="relaxed")


@triton.jit
def tile_is_live(live_ptr, pid_n, pid_v, v_blocks, PREFILTER: tl.constexpr):
    """The forward's verdict on tile (pid_n, pid_v) (``live_tiles``): False only when gradient
    filtering is on and every softmax entry of the tile's valid rows was below filter_eps, so
    the backward skips even the recompute GEMM."""
    if PREFILTER:
        return tl.load(live_ptr + pid_n * v_blocks + pid_v) != 0
    else:
        return True
