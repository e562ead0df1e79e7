"""The CPU paths (``paged_attention_torch``: decode summing values from the cache in place,
prefill through SDPA) against the reference (``paged_attention_ref``, gather + einsum) and
against attention computed here in float64, one sequence at a time, from each token's slot: on
fresh random paged caches (NaN in every slot outside a context, ``-1`` table entries, contexts
of length 0, GQA, shared prefix blocks, odd block sizes and lengths, fp16 / bf16 / fp32, scores
in the thousands; prefill: cached prefixes, sequences with no new tokens).

Tolerance: the two fp32 paths sum in different orders, so they agree to the rounding of the
scores, which the softmax turns into relative weight errors of about eps32 * |score|: we allow
16 * eps32 * (1 + max |score|) * max |v| against the float64 truth (plus half an output ulp for
fp16 / bf16 outputs)."""

from __future__ import annotations

import pytest
import torch

from judgefree.kernels.paged_attention import paged_attention_ops
from judgefree.kernels.paged_attention_ref import paged_decode_attention_ref, paged_prefill_attention_ref
from judgefree.kernels.paged_attention_torch import paged_decode_attention_torch, paged_prefill_attention_torch


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


def attention_float64(q, k_cache, v_cache, tables, lengths, scale):
    """Per sequence, per token: the K/V at its slot, softmax attention in float64; also the
    largest |score|."""
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = q.shape[1] // kv_heads
    out = torch.zeros(q.shape, dtype=torch.float64)
    largest = 0.0
    for seq, n in enumerate(lengths):
        if n == 0:
            continue
        slots = [(int(tables[seq, t // block_size]), t % block_size) for t in range(n)]
        keys = torch.stack([k_cache[b, o] for b, o in slots]).double()  # [n, kv_heads, D]
        values = torch.stack([v_cache[b, o] for b, o in slots]).double()
        for head in range(q.shape[1]):
            scores = keys[:, head // group] @ q[seq, head].double() * scale
            largest = max(largest, scores.abs().max().item())
            out[seq, head] = torch.softmax(scores, 0) @ values[:, head // group]
    return out, largest


CASES = [
    (torch.float32, [37, 1, 70, 16], 4, 4, 32, 16, 0),
    (torch.float32, [45, 40, 33], 6, 2, 64, 16, 2),  # GQA, shared prefix blocks
    (torch.float16, [5, 0, 29], 3, 1, 24, 7, 0),     # an empty context, odd block size and head_dim
    (torch.bfloat16, [100, 3], 8, 2, 16, 32, 0),
    (torch.float32, [1], 2, 1, 8, 1, 0),             # block size 1
    (torch.float32, [53, 0, 17, 0, 64], 9, 3, 40, 16, 3),  # empty rows between others, shared blocks
]


@pytest.mark.parametrize("dtype, lengths, q_heads, kv_heads, head_dim, block_size, share", CASES)
def test_decode_matches_float64_attention_and_the_reference(dtype, lengths, q_heads, kv_heads, head_dim,
                                                            block_size, share, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    k_cache, v_cache, tables, lens = random_paged(gen, lengths, kv_heads, head_dim, block_size, dtype, share=share)
    q = torch.randn(len(lengths), q_heads, head_dim, generator=gen).to(dtype)
    v_max = v_cache.nan_to_num(0).abs().max().double().item()
    for scale in (head_dim**-0.5, 40.0):  # 40: scores in the hundreds to thousands
        ours = paged_decode_attention_torch(q, k_cache, v_cache, tables, lens, scale)
        ref = paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, scale)
        truth, largest = attention_float64(q, k_cache, v_cache, tables, lengths, scale)
        assert ours.dtype == dtype and ours.shape == q.shape
        assert not torch.isnan(ours).any()
        tol = 16 * torch.finfo(torch.float32).eps * (1 + largest) * v_max
        if dtype != torch.float32:
            tol += torch.finfo(dtype).eps * v_max
        assert (ours.double() - truth).abs().max().item() <= tol
        assert (ref.double() - truth).abs().max().item() <= tol  # the bound is one both paths meet
        assert (ours.double() - ref.double()).abs().max().item() <= 2 * tol
        for seq, n in enumerate(lengths):
            if n == 0:
                assert torch.equal(ours[seq], torch.zeros_like(ours[seq]))


def test_the_gathered_values_path_for_a_non_contiguous_fp32_cache(fresh_seed):
    """fp32 caches sum values in place; one that is not contiguous takes the gathered copy:
    both give the same answer to rounding."""
    gen = torch.Generator().manual_seed(fresh_seed)
    lengths = [23, 0, 41]
    k_cache, v_cache, tables, lens = random_paged(gen, lengths, 2, 16, 8, torch.float32, share=1)
    wide = torch.full((*v_cache.shape[:3], 32), float("nan"))
    wide[..., :16] = v_cache
    strided = wide[..., :16]  # the same values, rows 32 floats apart
    assert not strided.is_contiguous()
    q = torch.randn(3, 4, 16, generator=gen)
    in_place = paged_decode_attention_torch(q, k_cache, v_cache, tables, lens, 0.25)
    gathered = paged_decode_attention_torch(q, k_cache, strided, tables, lens, 0.25)
    truth, largest = attention_float64(q, k_cache, v_cache, tables, lengths, 0.25)
    tol = 16 * torch.finfo(torch.float32).eps * (1 + largest) * v_cache.nan_to_num(0).abs().max().item()
    assert (in_place.double() - truth).abs().max().item() <= tol
    assert (gathered.double() - truth).abs().max().item() <= tol


def test_all_empty_and_the_cpu_backend_uses_it(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    k_cache, v_cache, tables, lens = random_paged(gen, [0, 0], 1, 8, 4, torch.float32)
    q = torch.randn(2, 1, 8, generator=gen)
    assert torch.equal(paged_decode_attention_torch(q, k_cache, v_cache, tables, lens, 1.0), torch.zeros_like(q))
    assert paged_attention_ops("auto", k_cache).decode is paged_decode_attention_torch
    assert paged_attention_ops("torch", k_cache).decode is paged_decode_attention_torch


def test_the_cache_is_left_untouched(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    for dtype in (torch.float32, torch.bfloat16):  # the in-place sum and the gathered copy
        k_cache, v_cache, tables, lens = random_paged(gen, [19, 4], 2, 16, 8, dtype)
        k_before, v_before = k_cache.clone(), v_cache.clone()
        paged_decode_attention_torch(torch.randn(2, 2, 16, generator=gen).to(dtype), k_cache, v_cache, tables, lens, 0.25)
        assert torch.equal(k_cache.isnan(), k_before.isnan()) and torch.equal(v_cache.isnan(), v_before.isnan())
        assert torch.equal(k_cache.nan_to_num(), k_before.nan_to_num())
        assert torch.equal(v_cache.nan_to_num(), v_before.nan_to_num())


def prefill_float64(q, k_cache, v_cache, tables, lengths, new_tokens, scale):
    """Per sequence and new token: causal softmax attention in float64 over the slots up to it;
    also the largest |score|."""
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = q.shape[1] // kv_heads
    out = torch.zeros(q.shape, dtype=torch.float64)
    largest, row = 0.0, 0
    for seq, (n, new) in enumerate(zip(lengths, new_tokens)):
        slots = [(int(tables[seq, t // block_size]), t % block_size) for t in range(n)]
        for position in range(n - new, n):
            keys = torch.stack([k_cache[b, o] for b, o in slots[:position + 1]]).double()
            values = torch.stack([v_cache[b, o] for b, o in slots[:position + 1]]).double()
            for head in range(q.shape[1]):
                scores = keys[:, head // group] @ q[row, head].double() * scale
                largest = max(largest, scores.abs().max().item())
                out[row, head] = torch.softmax(scores, 0) @ values[:, head // group]
            row += 1
    return out, largest


@pytest.mark.parametrize("dtype, lengths, new_tokens, q_heads, kv_heads, head_dim, block_size, share", [
    (torch.float32, [37, 9, 20], [37, 9, 20], 4, 4, 32, 16, 0),   # plain prefill
    (torch.float32, [45, 40, 33], [6, 1, 33], 6, 2, 64, 16, 2),   # cached prefixes, GQA, shared blocks
    (torch.float16, [29, 5, 11], [4, 0, 11], 3, 1, 24, 7, 0),     # a sequence with no new token, odd sizes
    (torch.bfloat16, [50, 3], [17, 3], 8, 2, 16, 32, 0),
    (torch.float32, [1, 4], [1, 2], 2, 1, 8, 1, 0),               # block size 1
])
def test_prefill_matches_float64_attention_and_the_reference(dtype, lengths, new_tokens, q_heads, kv_heads, head_dim,
                                                             block_size, share, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    k_cache, v_cache, tables, lens = random_paged(gen, lengths, kv_heads, head_dim, block_size, dtype, share=share)
    cu = torch.tensor([0] + torch.tensor(new_tokens).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(sum(new_tokens), q_heads, head_dim, generator=gen).to(dtype)
    v_max = v_cache.nan_to_num(0).abs().max().double().item()
    for scale in (head_dim**-0.5, 40.0):
        ours = paged_prefill_attention_torch(q, k_cache, v_cache, tables, cu, lens, scale)
        ref = paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu, lens, scale)
        truth, largest = prefill_float64(q, k_cache, v_cache, tables, lengths, new_tokens, scale)
        assert ours.dtype == dtype and ours.shape == q.shape and not torch.isnan(ours).any()
        tol = 16 * torch.finfo(torch.float32).eps * (1 + largest) * v_max
        if dtype != torch.float32:
            tol += torch.finfo(dtype).eps * v_max
        assert (ours.double() - truth).abs().max().item() <= tol
        assert (ref.double() - truth).abs().max().item() <= tol
        assert (ours.double() - ref.double()).abs().max().item() <= 2 * tol


def test_the_cpu_backend_prefills_with_it():
    k_cache = torch.zeros(2, 4, 1, 8)
    assert paged_attention_ops("auto", k_cache).prefill is paged_prefill_attention_torch
    assert paged_attention_ops("torch", k_cache).prefill is paged_prefill_attention_torch
