"""The CPU decode path (``paged_attention_torch``) against the reference
(``paged_attention_ref``): equal bit for bit on fresh random paged caches (NaN in every slot
outside a context, ``-1`` table entries, contexts of length 0, GQA, odd block sizes and
lengths, fp16 / bf16 / fp32, scores in the thousands). The reference itself is checked
against dense attention in test_paged_attention.py."""

from __future__ import annotations

import pytest
import torch

from judgefree.kernels.paged_attention import paged_attention_ops
from judgefree.kernels.paged_attention_ref import paged_decode_attention_ref
from judgefree.kernels.paged_attention_torch import paged_decode_attention_torch


def random_paged(gen, lengths, kv_heads, head_dim, block_size, dtype, spare=3, share=0):
    needed = [-(-n // block_size) for n in lengths]
    num_blocks = sum(needed) + spare
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables = torch.full((len(lengths), max(needed + [0]) + 2), -1, dtype=torch.int32)
    for seq, count in enumerate(needed):
        shared = min(share, count) if seq else 0  # later rows reuse row 0's first blocks
        tables[seq, :shared] = tables[0, :shared]
        for i in range(shared, count):
            tables[seq, i] = order.pop()
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    for seq, n in enumerate(lengths):  # fill only the slots inside each context
        for t in range(n):
            block, offset = int(tables[seq, t // block_size]), t % block_size
            if torch.isnan(k_cache[block, offset]).any():
                k_cache[block, offset] = torch.randn(kv_heads, head_dim, generator=gen).to(dtype)
                v_cache[block, offset] = torch.randn(kv_heads, head_dim, generator=gen).to(dtype)
    return k_cache, v_cache, tables, torch.tensor(lengths, dtype=torch.int32)


@pytest.mark.parametrize("dtype, lengths, q_heads, kv_heads, head_dim, block_size, share", [
    (torch.float32, [37, 1, 70, 16], 4, 4, 32, 16, 0),
    (torch.float32, [45, 40, 33], 6, 2, 64, 16, 2),  # GQA, shared prefix blocks
    (torch.float16, [5, 0, 29], 3, 1, 24, 7, 0),     # an empty context, odd block size and head_dim
    (torch.bfloat16, [100, 3], 8, 2, 16, 32, 0),
    (torch.float32, [1], 2, 1, 8, 1, 0),             # block size 1
])
def test_decode_equals_the_reference_bit_for_bit(dtype, lengths, q_heads, kv_heads, head_dim, block_size, share, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    k_cache, v_cache, tables, lens = random_paged(gen, lengths, kv_heads, head_dim, block_size, dtype, share=share)
    q = torch.randn(len(lengths), q_heads, head_dim, generator=gen).to(dtype)
    for scale in (head_dim**-0.5, 40.0):  # 40: scores in the hundreds to thousands
        ours = paged_decode_attention_torch(q, k_cache, v_cache, tables, lens, scale)
        ref = paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, scale)
        assert ours.dtype == dtype and ours.shape == q.shape
        assert not torch.isnan(ours).any()
        assert torch.equal(ours, ref)
        for seq, n in enumerate(lengths):
            if n == 0:
                assert torch.equal(ours[seq], torch.zeros_like(ours[seq]))


def test_all_empty_and_the_cpu_backend_uses_it(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    k_cache, v_cache, tables, lens = random_paged(gen, [0, 0], 1, 8, 4, torch.float32)
    q = torch.randn(2, 1, 8, generator=gen)
    assert torch.equal(paged_decode_attention_torch(q, k_cache, v_cache, tables, lens, 1.0), torch.zeros_like(q))
    assert paged_attention_ops("auto", k_cache).decode is paged_decode_attention_torch
    assert paged_attention_ops("torch", k_cache).decode is paged_decode_attention_torch


def test_gather_leaves_the_cache_untouched(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    k_cache, v_cache, tables, lens = random_paged(gen, [19, 4], 2, 16, 8, torch.float32)
    k_before, v_before = k_cache.clone(), v_cache.clone()
    paged_decode_attention_torch(torch.randn(2, 2, 16, generator=gen), k_cache, v_cache, tables, lens, 0.25)
    assert torch.equal(k_cache.isnan(), k_before.isnan()) and torch.equal(v_cache.isnan(), v_before.isnan())
    assert torch.equal(k_cache.nan_to_num(), k_before.nan_to_num()) and torch.equal(v_cache.nan_to_num(), v_before.nan_to_num())
