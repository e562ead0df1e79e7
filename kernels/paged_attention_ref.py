"""Paged attention in plain PyTorch: the reference for the Triton kernels and the CPU path.

K/V live in a paged cache ``[num_blocks, block_size, num_kv_heads, head_dim]``; a sequence's
token t sits in block ``block_table[t // block_size]`` at offset ``t % block_size``. These
functions gather K/V through the block table and run exact softmax attention in fp32.
Arguments are assumed valid (``paged_attention`` checks them).
"""

from __future__ import annotations

import torch


def store_kv_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write ``k, v [N, kv_heads, head_dim]`` into the caches at ``slot_mapping`` (-1 = skip)."""
    block_size = k_cache.shape[1]
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    blocks, offsets = slots // block_size, slots % block_size
    k_cache[blocks, offsets] = k[keep].to(k_cache.dtype)
    v_cache[blocks, offsets] = v[keep].to(v_cache.dtype)


def gather_kv(
    cache: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cache rows of the first ``length`` positions of each sequence, ``[B, length, kv_heads,
    head_dim]`` (zeros past a sequence's context), and the mask ``[B, length]`` of positions
    inside the context."""
    block_size = cache.shape[1]
    positions = torch.arange(length, device=cache.device)
    valid = positions[None, :] < context_lens[:, None].to(positions.device)
    # Entries past a sequence's context may be -1 (unused): read a real block there instead.
    block_ids = block_tables[:, positions // block_size].long().where(valid, 0)
    slots = block_ids * block_size + positions % block_size
    # index_select on the flat slot axis is several times faster than 2-D fancy indexing on the CPU.
    flat = cache.reshape(-1, *cache.shape[2:])
    rows = flat.index_select(0, slots.flatten()).view(*slots.shape, *cache.shape[2:])
    # Zero what was read outside the context so that garbage (NaN) there cannot leak via 0 * NaN.
    return rows.masked_fill(~valid[:, :, None, None], 0), valid


def paged_decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query token per sequence over its whole cached context: ``q [B, q_heads, D]`` ->
    ``[B, q_heads, D]`` in q.dtype. A sequence with context length 0 gets zeros."""
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_q_heads // num_kv_heads
    length = int(context_lens.max()) if batch else 0
    if length == 0:
        return torch.zeros_like(q)
    keys, valid = gather_kv(k_cache, block_tables, context_lens, length)
    values, _ = gather_kv(v_cache, block_tables, context_lens, length)
    q_grouped = q.float().view(batch, num_kv_heads, group, head_dim)
    scores = torch.einsum("bhgd,blhd->bhgl", q_grouped, keys.float()) * scale
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # An empty context softmaxes to NaN: define its output as zeros (e.g. padded batch rows).
    probs = probs.masked_fill((context_lens == 0).to(probs.device)[:, None, None, None], 0.0)
    out = torch.einsum("bhgl,blhd->bhgd", probs, values.float())
    return out.reshape(batch, num_q_heads, head_dim).to(q.dtype)


def paged_prefill_attention_ref(
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
    num_kv_heads = k_cache.shape[2]
    group = num_q_heads // num_kv_heads
    out = torch.empty_like(q)
    bounds = cu_seqlens_q.tolist()
    for seq, context_len in enumerate(context_lens.tolist()):
        start, end = bounds[seq], bounds[seq + 1]
        if end == start:
            continue
        table = block_tables[seq : seq + 1]
        lens = context_lens[seq : seq + 1]
        keys, _ = gather_kv(k_cache, table, lens, context_len)
        values, _ = gather_kv(v_cache, table, lens, context_len)
        q_seq = q[start:end].float().view(end - start, num_kv_heads, group, head_dim)
        scores = torch.einsum("thgd,lhd->hgtl", q_seq, keys[0].float()) * scale
        query_pos = torch.arange(context_len - (end - start), context_len, device=q.device)
        key_pos = torch.arange(context_len, device=q.device)
        scores = scores.masked_fill(key_pos[None, :] > query_pos[:, None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        seq_out = torch.einsum("hgtl,lhd->thgd", probs, values[0].float())
        out[start:end] = seq_out.reshape(end - start, num_q_heads, head_dim).to(q.dtype)
    return out
