"""Per-token log p(target) through the lm_head in PyTorch, without [N, V] logits: the CPU path.

``LinearLogprobsChunked`` computes the numbers of ``linear_logprobs_ref`` over
[token_chunk, vocab_chunk] tiles: the forward keeps one running log-sum-exp and the target
logit per token; the backward recomputes every tile from the saved log-sum-exp (the Cut
Cross-Entropy scheme, in PyTorch). A frozen lm_head (LoRA) carries E[W] through the forward
instead, so nothing is recomputed.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from judgefree.kernels.linear_logprobs_ref import compute_dtype

# A [1024, 4096] fp32 tile is 16 MiB: big enough for efficient matmuls, small enough that
# the few live tiles stay far below the [N, V] logits they replace.
TOKEN_CHUNK = 1024
VOCAB_CHUNK = 4096


def _onehot_columns(safe_targets: torch.Tensor, v0: int, v1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column of each row's target inside vocab chunk [v0, v1) (clamped) and whether it is there."""
    local = safe_targets - v0
    inside = (local >= 0) & (local < v1 - v0)
    return local.clamp(0, v1 - v0 - 1), inside


def _logsumexp_inplace(logits: torch.Tensor) -> torch.Tensor:
    """Row log-sum-exp that overwrites ``logits`` (no tile-sized temporaries)."""
    row_max = logits.amax(dim=1)
    return row_max + logits.sub_(row_max[:, None]).exp_().sum(dim=1).log_()


class LinearLogprobsChunked(torch.autograd.Function):
    """Chunked linear log-probs: O(N + chunk) extra memory in the forward, O(N*H + V*H) grads
    (O(N*H) saved in the forward when the weight is frozen)."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int,
        token_chunk: int,
        vocab_chunk: int,
    ) -> torch.Tensor:
        dtype = compute_dtype(hidden.dtype)
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        valid = targets != ignore_index
        safe_targets = torch.where(valid, targets, 0)
        lse = torch.full((n_tokens,), float("-inf"), dtype=dtype, device=hidden.device)
        target_logit = torch.zeros(n_tokens, dtype=dtype, device=hidden.device)
        # A frozen lm_head (LoRA): carry E[W] = sum_v softmax_v W_v through the forward (an
        # online softmax-weighted sum, as attention's output), so that the backward is
        # d logp / d hidden = W[target] - E[W] with no tile recomputed: 2 matmuls in all, as eager.
        expected_w = None
        if ctx.needs_input_grad[0] and not ctx.needs_input_grad[1]:
            expected_w = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device)
        # Vocab outer, tokens inner: each weight chunk is converted once.
        for v0 in range(0, vocab, vocab_chunk):
            v1 = min(v0 + vocab_chunk, vocab)
            w = weight[v0:v1].to(dtype)
            cols, inside = _onehot_columns(safe_targets, v0, v1)
            for n0 in range(0, n_tokens, token_chunk):
                n1 = min(n0 + token_chunk, n_tokens)
                logits = hidden[n0:n1].to(dtype) @ w.T
                # The target logit comes from the same tile as the log-sum-exp, so a peaked
                # row gives exactly logp <= 0 with no cross-path rounding.
                picked = logits.gather(1, cols[n0:n1, None]).squeeze(1)
                target_logit[n0:n1] = torch.where(inside[n0:n1], picked, target_logit[n0:n1])
                if expected_w is None:
                    torch.logaddexp(lse[n0:n1], _logsumexp_inplace(logits), out=lse[n0:n1])
                    continue
                new_lse = torch.logaddexp(lse[n0:n1], torch.logsumexp(logits, dim=1))
                probs = logits.sub_(new_lse[:, None]).exp_()
                expected_w[n0:n1].mul_(torch.exp(lse[n0:n1] - new_lse)[:, None]).addmm_(probs, w)
                lse[n0:n1] = new_lse
        ctx.save_for_backward(hidden, weight, safe_targets, valid, lse, expected_w)
        ctx.chunks = (token_chunk, vocab_chunk)
        logp = target_logit - lse
        return torch.where(valid, logp, torch.zeros_like(logp))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        hidden, weight, safe_targets, valid, lse, expected_w = ctx.saved_tensors
        token_chunk, vocab_chunk = ctx.chunks
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dtype = compute_dtype(hidden.dtype)
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        grad = torch.where(valid, grad_out.to(dtype), torch.zeros((), dtype=dtype, device=grad_out.device))
        if expected_w is not None:  # frozen weight: the forward already did the work
            grad_hidden = grad[:, None] * (weight[safe_targets].to(dtype) - expected_w)
            return grad_hidden.to(hidden.dtype), None, None, None, None, None
        grad_hidden = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device) if need_hidden else None
        grad_weight = None
        if need_weight:  # accumulate in place when the weight already has the compute dtype
            grad_weight = torch.zeros_like(weight) if weight.dtype == dtype else torch.empty_like(weight)
        for v0 in range(0, vocab, vocab_chunk):
            v1 = min(v0 + vocab_chunk, vocab)
            w = weight[v0:v1].to(dtype)
            cols, inside = _onehot_columns(safe_targets, v0, v1)
            onehot_grad = torch.where(inside, grad, torch.zeros((), dtype=dtype, device=grad.device))
            grad_w_chunk = None
            if need_weight:
                grad_w_chunk = grad_weight[v0:v1] if weight.dtype == dtype else torch.zeros_like(w)
            for n0 in range(0, n_tokens, token_chunk):
                n1 = min(n0 + token_chunk, n_tokens)
                h = hidden[n0:n1].to(dtype)
                # d logp / d logits = g * (onehot - softmax), built in place in the tile.
                d_logits = (h @ w.T).sub_(lse[n0:n1, None]).exp_().mul_(-grad[n0:n1, None])
                d_logits.scatter_add_(1, cols[n0:n1, None], onehot_grad[n0:n1, None])
                if need_hidden:
                    grad_hidden[n0:n1].addmm_(d_logits, w)
                if need_weight:
                    grad_w_chunk.addmm_(d_logits.T, h)
            if need_weight and weight.dtype != dtype:
                grad_weight[v0:v1] = grad_w_chunk
        if need_hidden:
            grad_hidden = grad_hidden.to(hidden.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def linear_logprobs_chunked(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    *,
    token_chunk: int = TOKEN_CHUNK,
    vocab_chunk: int = VOCAB_CHUNK,
) -> torch.Tensor:
    """Per-token log p(target) over [token_chunk, vocab_chunk] tiles (inputs assumed valid)."""
    if token_chunk < 1 or vocab_chunk < 1:
        raise ValueError(f"token_chunk and vocab_chunk must be >= 1, got {token_chunk}, {vocab_chunk}")
    return LinearLogprobsChunked.apply(hidden, weight, targets, ignore_index, token_chunk, vocab_chunk)
