"""Paged decode attention for the CPU path, in PyTorch: the reference's arithmetic on K/V
gathered a whole block at a time.

``paged_attention_ref.gather_kv`` indexes one token row per position (a slot index per token,
then a masked copy of the result): per layer per decode step that is two passes over every
row's whole context. Here one ``index_select`` on the block axis copies each row's blocks
([block_size, kv_heads, head_dim] contiguous chunks, no per-token index arithmetic); only the
value rows past each context are zeroed, in place, by index (the keys there are masked out
through their scores). The scores, softmax and weighted sum are
the reference's own expressions on the same values, so the output equals the reference's
bit for bit (tests/kernels/test_paged_attention_torch.py). Arguments are assumed valid.
"""

from __future__ import annotations

import torch


def _gather_blocks(cache: torch.Tensor, block_ids: torch.Tensor, invalid: torch.Tensor | None) -> torch.Tensor:
    """[B, width * block_size, kv_heads, head_dim]: each row's blocks in order; the flat
    positions ``invalid`` (past a context: slots that may hold anything, NaN included) zeroed."""
    batch, width = block_ids.shape
    rows = cache.index_select(0, block_ids.flatten())
    flat = rows.view(batch * width * cache.shape[1], *cache.shape[2:])
    if invalid is not None:
        flat.index_fill_(0, invalid, 0)  # touches only the few invalid rows, not the whole context
    return rows.view(batch, width * cache.shape[1], *cache.shape[2:])


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
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    group = num_q_heads // num_kv_heads
    length = int(context_lens.max()) if batch else 0
    if length == 0:
        return torch.zeros_like(q)
    width = -(-length // block_size)
    lens = context_lens.to(torch.int64)
    positions = torch.arange(width * block_size, device=q.device)
    valid_all = positions[None, :] < lens[:, None]
    valid = valid_all[:, :length]
    # table entries past a row's blocks may be -1 (unused): read block 0 there instead
    block_ids = block_tables[:, :width].long()
    block_ids = block_ids.where(valid_all[:, ::block_size], 0)
    # Keys past a context need no zeroing: their scores are replaced by -inf below. Values
    # do (0 * NaN = NaN in the weighted sum).
    keys = _gather_blocks(k_cache, block_ids, None)[:, :length]
    values = _gather_blocks(v_cache, block_ids, (~valid_all).flatten().nonzero().flatten())[:, :length]
    q_grouped = q.float().view(batch, num_kv_heads, group, head_dim)
    scores = torch.einsum("bhgd,blhd->bhgl", q_grouped, keys.float()) * scale
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = probs.masked_fill((lens == 0)[:, None, None, None], 0.0)
    out = torch.einsum("bhgl,blhd->bhgd", probs, values.float())
    return out.reshape(batch, num_q_heads, head_dim).to(q.dtype)
