"""Paged attention for the CPU path, in PyTorch: decode reading V from the cache in place,
and prefill through torch's fused SDPA.

The weighted sum of values never copies the context: ``F.embedding_bag`` (mode ``"sum"``,
per-sample weights) sums rows of the cache viewed as ``[slots * kv_heads, head_dim]``, one
bag per query head, the softmax weights as the per-sample weights; the rows are read where
they lie. Positions past a context point at the row's own first slot with weight exactly 0,
so nothing outside a context is read into the sum (its slots may hold anything, NaN included).
The scores need the keys next to each other for a matmul: one ``index_select`` copies each
row's blocks (whole [block_size, kv_heads, head_dim] chunks), then one batched matmul per KV
head runs on strided views of that copy (no second, relayout copy as an einsum makes).

Not bit-identical to ``paged_attention_ref`` (its gather + einsum sums in another order): the
outputs agree to float32 rounding of the scores (tests/kernels/test_paged_attention_torch.py);
the engine's tokens are unchanged (tests/engine, bench/profile_engine_cpu.py's token hash).
Caches in fp16/bf16 (or not contiguous) take the gathered values instead of the in-place sum:
the sum must accumulate in fp32, and embedding_bag accumulates in the weights' dtype.

Prefill, per sequence: its blocks gathered whole (cut at its context, so nothing outside it is
read), then ``F.scaled_dot_product_attention`` in fp32 with the causal mask of new tokens at the
end of the context (the reference materialises the [heads, new, context] scores and softmax).
Also equal to the reference to fp32 rounding. Arguments are assumed valid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _scores(q: torch.Tensor, k_cache: torch.Tensor, block_ids: torch.Tensor, length: int, scale: float) -> torch.Tensor:
    """fp32 [kv_heads, B, group, length]: q . k * scale for the first ``length`` positions
    (positions past a row's context hold whatever its block held: mask them)."""
    batch, num_q_heads, head_dim = q.shape
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_q_heads // num_kv_heads
    keys = k_cache.index_select(0, block_ids.flatten()).view(batch, -1, num_kv_heads, head_dim)[:, :length]
    keys = keys.float()  # a copy only for fp16/bf16 caches
    q_grouped = q.float().view(batch, num_kv_heads, group, head_dim)
    scores = torch.empty(num_kv_heads, batch, group, length, dtype=torch.float32, device=q.device)
    for head in range(num_kv_heads):  # [B, group, D] @ [B, D, length], both strided views
        torch.bmm(q_grouped[:, head], keys[:, :, head].transpose(1, 2), out=scores[head])
    return scores.mul_(scale)


def _slots(block_ids: torch.Tensor, valid: torch.Tensor, block_size: int) -> torch.Tensor:
    """int64 [B, length]: each position's cache slot; the row's first slot past its context."""
    offsets = torch.arange(block_size, device=valid.device)
    slots = (block_ids[:, :, None] * block_size + offsets).flatten(1)[:, :valid.shape[1]]
    return slots.where(valid, slots[:, :1])


def _weighted_values_in_place(probs: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """fp32 [kv_heads, B, group, D]: sum over positions of probs * v, read from the cache."""
    num_kv_heads, batch, group, length = probs.shape
    head_dim = v_cache.shape[3]
    heads = torch.arange(num_kv_heads, device=slots.device)
    rows = slots[None, :, None, :] * num_kv_heads + heads[:, None, None, None]  # [kv_heads, B, 1, length]
    rows = rows.expand(num_kv_heads, batch, group, length).reshape(-1, length)
    out = F.embedding_bag(rows, v_cache.view(-1, head_dim), per_sample_weights=probs.view(-1, length), mode="sum")
    return out.view(num_kv_heads, batch, group, head_dim)


def _weighted_values_gathered(probs: torch.Tensor, v_cache: torch.Tensor, block_ids: torch.Tensor,
                              valid: torch.Tensor) -> torch.Tensor:
    """As ``_weighted_values_in_place``, on a gathered fp32 copy of the values (zeroed past
    each context: 0 * NaN would be NaN)."""
    num_kv_heads, batch, group, length = probs.shape
    head_dim = v_cache.shape[3]
    values = v_cache.index_select(0, block_ids.flatten()).view(batch, -1, num_kv_heads, head_dim)[:, :length]
    values = values.float().masked_fill(~valid[:, :, None, None], 0)
    out = torch.empty(num_kv_heads, batch, group, head_dim, dtype=torch.float32, device=probs.device)
    for head in range(num_kv_heads):
        torch.bmm(probs[head], values[:, :, head], out=out[head])
    return out


def paged_decode_attention_torch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query token per sequence over its cached context: ``q [B, q_heads, D]`` ->
    ``[B, q_heads, D]`` in q.dtype; zeros for a context of length 0."""
    batch, num_q_heads, head_dim = q.shape
    block_size = k_cache.shape[1]
    length = int(context_lens.max()) if batch else 0
    if length == 0:
        return torch.zeros_like(q)
    width = -(-length // block_size)
    lens = context_lens.to(torch.int64)
    valid = torch.arange(length, device=q.device)[None, :] < lens[:, None]
    # table entries past a row's blocks may be -1 (unused): read block 0 there instead
    block_in_use = torch.arange(width, device=q.device)[None, :] * block_size < lens[:, None]
    block_ids = block_tables[:, :width].long().where(block_in_use, 0)
    scores = _scores(q, k_cache, block_ids, length, scale)
    scores.masked_fill_(~valid[None, :, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if v_cache.dtype == torch.float32 and v_cache.is_contiguous():
        out = _weighted_values_in_place(probs, v_cache, _slots(block_ids, valid, block_size))
    else:
        out = _weighted_values_gathered(probs, v_cache, block_ids, valid)
    # [kv_heads, B, group, D] -> [B, q_heads, D]; an empty context softmaxes to NaN: zeros
    out = out.permute(1, 0, 2, 3).reshape(batch, num_q_heads, head_dim)
    return out.masked_fill_((lens == 0)[:, None, None], 0.0).to(q.dtype)


def paged_prefill_attention_torch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Causal attention of packed new tokens ``q [T, q_heads, D]`` over each sequence's cached
    prefix and themselves; the new tokens are the last ``cu[i+1]-cu[i]`` of ``context_lens[i]``."""
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    bounds = cu_seqlens_q.tolist()
    for seq, context_len in enumerate(context_lens.tolist()):
        start, end = bounds[seq], bounds[seq + 1]
        if end == start:
            continue
        blocks = block_tables[seq, :-(-context_len // block_size)].long()
        keys = k_cache.index_select(0, blocks).view(-1, num_kv_heads, head_dim)[:context_len].float()
        values = v_cache.index_select(0, blocks).view(-1, num_kv_heads, head_dim)[:context_len].float()
        query_pos = torch.arange(context_len - (end - start), context_len, device=q.device)
        causal = torch.arange(context_len, device=q.device)[None, :] <= query_pos[:, None]
        seq_out = F.scaled_dot_product_attention(
            q[start:end].float().transpose(0, 1)[None], keys.transpose(0, 1)[None], values.transpose(0, 1)[None],
            attn_mask=causal, scale=scale, enable_gqa=num_q_heads != num_kv_heads)
        out[start:end] = seq_out[0].transpose(0, 1).to(q.dtype)
    return out
