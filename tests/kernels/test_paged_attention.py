"""Paged attention: the Triton kernels (through the interpreter on the CPU) and the PyTorch
reference (``paged_attention_ref``) against dense causal attention in fp64 on contiguous K/V
(the ground truth), and Triton against the reference. Tolerances per dtype in ``ATOL``.

Every cache starts filled with NaN: a kernel that reads a slot outside a sequence's context
(unused tail of its last block, spare blocks, ``-1`` table entries) turns its output NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from judgefree.kernels.paged_attention import paged_decode_attention, paged_prefill_attention, store_kv
from judgefree.kernels.paged_attention_triton import (
    choose_num_splits,
    paged_decode_attention_triton,
    paged_prefill_attention_triton,
)

# fp16: inputs rounded identically, error from fp16 P in P@V and the fp16 output; bf16: output rounding.
ATOL = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 3e-2}


@dataclass(slots=True)
class PagedBatch:
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    keys: list[torch.Tensor]  # per sequence [L, kv_heads, D], what the cache holds
    values: list[torch.Tensor]


def build_paged(
    lengths: list[int], kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype, gen: torch.Generator,
    *, shared_blocks: int = 0, backend: str = "torch", device: str = "cpu",
) -> PagedBatch:
    """Fill a NaN-initialised paged cache through ``store_kv`` with random K/V, blocks placed in
    shuffled order; sequences after the first reuse its first ``shared_blocks`` physical blocks."""
    needed = [-(-n // block_size) for n in lengths]
    num_blocks = sum(needed) + 3  # spare blocks stay NaN
    order = torch.randperm(num_blocks, generator=gen).tolist()
    width = max(needed + [1]) + 1
    tables = torch.full((len(lengths), width), -1, dtype=torch.int32)
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    keys, values, slot_rows, k_rows, v_rows = [], [], [], [], []
    for seq, (length, count) in enumerate(zip(lengths, needed)):
        shared = min(shared_blocks, count) if seq > 0 else 0
        tables[seq, :shared] = tables[0, :shared]
        for i in range(shared, count):
            tables[seq, i] = order.pop()
        k = torch.randn(length, kv_heads, head_dim, generator=gen).to(dtype)
        v = torch.randn(length, kv_heads, head_dim, generator=gen).to(dtype)
        start = min(shared * block_size, length)
        if start:  # shared positions hold seq 0's K/V
            k[:start], v[:start] = keys[0][:start], values[0][:start]
        keys.append(k)
        values.append(v)
        pos = torch.arange(start, length)
        slot_rows.append(tables[seq, pos // block_size].long() * block_size + pos % block_size)
        k_rows.append(k[start:])
        v_rows.append(v[start:])
    # Padding rows (slot -1) carry garbage that must not be written anywhere.
    slot_rows.append(torch.full((2,), -1, dtype=torch.int64))
    k_rows.append(torch.full((2, kv_heads, head_dim), 7.0, dtype=dtype))
    v_rows.append(torch.full((2, kv_heads, head_dim), 7.0, dtype=dtype))
    k_cache, v_cache = k_cache.to(device), v_cache.to(device)
    k_rows, v_rows, slots = torch.cat(k_rows).to(device), torch.cat(v_rows).to(device), torch.cat(slot_rows).to(device)
    store_kv(k_rows, v_rows, k_cache, v_cache, slots, backend=backend)
    lens = torch.tensor(lengths, dtype=torch.int32, device=device)
    return PagedBatch(k_cache, v_cache, tables.to(device), lens, keys, values)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Ground truth in fp64: ``q [n, Hq, D]`` are the last n positions of ``k, v [L, Hkv, D]``."""
    n, num_q_heads, _ = q.shape
    group = num_q_heads // k.shape[1]
    k = k.double().repeat_interleave(group, dim=1)
    v = v.double().repeat_interleave(group, dim=1)
    scores = torch.einsum("nhd,lhd->hnl", q.double(), k) * scale
    q_pos = torch.arange(k.shape[0] - n, k.shape[0])
    scores = scores.masked_fill(torch.arange(k.shape[0])[None, :] > q_pos[:, None], float("-inf"))
    return torch.einsum("hnl,lhd->nhd", scores.softmax(-1), v)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert not actual.isnan().any(), "NaN in output: a masked or unused cache slot was read"
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), atol=ATOL[dtype], rtol=ATOL[dtype])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_store_kv_writes_only_mapped_slots(backend, device, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    k_cache = torch.full((4, 8, 3, 24), float("nan"), dtype=torch.float16, device=device)
    v_cache = k_cache.clone()
    fused = torch.randn(5, 3, 2 * 24, generator=gen).half().to(device)  # k, v as strided views
    k, v = fused[..., :24], fused[..., 24:]
    slots = torch.tensor([31, -1, 0, 9, -1], dtype=torch.int64, device=device)
    store_kv(k, v, k_cache, v_cache, slots, backend=backend)
    for row, slot in enumerate(slots.tolist()):
        if slot >= 0:
            assert torch.equal(k_cache[slot // 8, slot % 8], k[row]) and torch.equal(v_cache[slot // 8, slot % 8], v[row])
    assert k_cache.isnan().sum() == k_cache.numel() - 3 * 3 * 24, "store_kv wrote outside the mapped slots"


@pytest.mark.parametrize(
    "dtype, q_heads, kv_heads, head_dim, block_size",
    [
        (torch.float32, 4, 4, 64, 16),  # MHA
        (torch.float16, 9, 3, 64, 8),  # SmolLM2-135M grouping
        (torch.bfloat16, 4, 2, 128, 32),
        (torch.float16, 2, 1, 80, 16),  # head_dim not a power of two
    ],
)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_decode_matches_dense(dtype, q_heads, kv_heads, head_dim, block_size, backend, device, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    lengths = [1, 37, block_size, 3 * block_size + 5]  # a single token, odd, exact block, ragged
    batch = build_paged(lengths, kv_heads, head_dim, block_size, dtype, gen, backend=backend, device=device)
    q = torch.randn(len(lengths), q_heads, head_dim, generator=gen).to(dtype).to(device)
    out = paged_decode_attention(q, batch.k_cache, batch.v_cache, batch.block_tables, batch.context_lens, backend=backend)
    assert out.dtype == dtype and out.shape == q.shape
    for seq in range(len(lengths)):
        expected = dense_attention(q[seq : seq + 1].cpu(), batch.keys[seq], batch.values[seq], head_dim**-0.5)[0]
        assert_close(out[seq], expected, dtype)


@pytest.mark.parametrize("num_splits", [1, 3, 8])
def test_decode_split_k_matches_reference(num_splits, device, fresh_seed):
    """Flash-decoding splits, including splits left empty by short contexts, merge exactly."""
    gen = torch.Generator().manual_seed(fresh_seed)
    lengths = [70, 1, 17, 33]
    batch = build_paged(lengths, 2, 64, 16, torch.float32, gen, device=device)
    q = torch.randn(len(lengths), 6, 64, generator=gen).to(device)
    args = (q, batch.k_cache, batch.v_cache, batch.block_tables, batch.context_lens)
    expected = paged_decode_attention(*args, scale=0.3, backend="torch")
    out = paged_decode_attention_triton(*args, 0.3, num_splits=num_splits, block_n=16)
    assert_close(out, expected, torch.float32)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_decode_shared_prefix_blocks_and_single_sequence(backend, device, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    batch = build_paged([40, 45, 33], 2, 64, 16, torch.float16, gen, shared_blocks=2, backend=backend, device=device)
    assert torch.equal(batch.block_tables[1, :2], batch.block_tables[0, :2])
    q = torch.randn(3, 4, 64, generator=gen).half().to(device)
    out = paged_decode_attention(q, batch.k_cache, batch.v_cache, batch.block_tables, batch.context_lens, backend=backend)
    for seq in range(3):
        assert_close(out[seq], dense_attention(q[seq : seq + 1].cpu(), batch.keys[seq], batch.values[seq], 0.125)[0], torch.float16)
    # B = 1: the second sequence alone through its own table row.
    tables, lens = batch.block_tables[1:2], batch.context_lens[1:2]
    single = paged_decode_attention(q[1:2], batch.k_cache, batch.v_cache, tables, lens, backend=backend)
    assert_close(single[0], dense_attention(q[1:2].cpu(), batch.keys[1], batch.values[1], 0.125)[0], torch.float16)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_decode_extreme_scores_and_empty_context(backend, device, fresh_seed):
    """Scores in the thousands (online softmax must not overflow) and a context of length 0
    (a padded batch row) whose output is defined as zeros."""
    gen = torch.Generator().manual_seed(fresh_seed)
    batch = build_paged([50, 1, 20], 1, 64, 16, torch.float32, gen, device=device)
    batch.context_lens[2] = 0
    fused = (torch.randn(3, 4 * 64, generator=gen) * 300).to(device)
    q = fused[:, : 2 * 64].view(3, 2, 64)  # strided like a slice of a fused QKV projection
    out = paged_decode_attention(q, batch.k_cache, batch.v_cache, batch.block_tables, batch.context_lens, scale=0.5, backend=backend)
    for seq in range(2):
        assert_close(out[seq], dense_attention(q[seq : seq + 1].cpu(), batch.keys[seq], batch.values[seq], 0.5)[0], torch.float32)
    assert torch.equal(out[2], torch.zeros_like(out[2]))


def _packed_queries(new_tokens: list[int], q_heads: int, head_dim: int, dtype, gen, device):
    q = torch.randn(sum(new_tokens), q_heads, head_dim, generator=gen).to(dtype).to(device)
    cu = torch.tensor([0] + new_tokens, dtype=torch.int32).cumsum(0, dtype=torch.int32).to(device)
    return q, cu


@pytest.mark.parametrize(
    "dtype, q_heads, kv_heads, lengths, new_tokens",
    [
        (torch.float32, 4, 2, [37, 9, 70], [37, 9, 70]),  # plain prefill, no cached prefix
        (torch.float16, 3, 3, [37, 50, 21, 1], [5, 1, 21, 1]),  # extend after cached prefixes
        (torch.bfloat16, 6, 2, [45], [28]),  # B = 1, prefix not a multiple of the block size
    ],
)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_prefill_matches_dense(dtype, q_heads, kv_heads, lengths, new_tokens, backend, device, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    batch = build_paged(lengths, kv_heads, 64, 16, dtype, gen, backend=backend, device=device)
    q, cu = _packed_queries(new_tokens, q_heads, 64, dtype, gen, device)
    args = (q, batch.k_cache, batch.v_cache, batch.block_tables, cu, batch.context_lens)
    out = paged_prefill_attention(*args, backend=backend)
    assert out.dtype == dtype and out.shape == q.shape
    for seq, (start, end) in enumerate(zip(cu.tolist(), cu.tolist()[1:])):
        expected = dense_attention(q[start:end].cpu(), batch.keys[seq], batch.values[seq], 0.125)
        assert_close(out[start:end], expected, dtype)


def test_prefill_tiles_shared_prefix_and_decode_agreement(device, fresh_seed):
    """Small tiles (many q and key tiles, sequences starting mid-tile) against the reference;
    on a shared prefix; and a one-token extend equals decode attention."""
    gen = torch.Generator().manual_seed(fresh_seed)
    lengths, new_tokens = [40, 45, 19], [11, 1, 19]
    batch = build_paged(lengths, 2, 64, 8, torch.float32, gen, shared_blocks=3, device=device)
    q, cu = _packed_queries(new_tokens, 4, 64, torch.float32, gen, device)
    q = q.transpose(0, 1).contiguous().transpose(0, 1)  # head-major strides
    args = (q, batch.k_cache, batch.v_cache, batch.block_tables, cu, batch.context_lens)
    expected = paged_prefill_attention(*args, scale=0.2, backend="torch")
    out = paged_prefill_attention_triton(*args, 0.2, block_m=16, block_n=16)
    assert_close(out, expected, torch.float32)
    tables, lens = batch.block_tables[1:2], batch.context_lens[1:2]
    decode = paged_decode_attention(q[11:12], batch.k_cache, batch.v_cache, tables, lens, scale=0.2, backend="triton")
    assert_close(decode, out[11:12], torch.float32)


def test_auto_backend_on_cpu_is_the_reference(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    batch = build_paged([20, 3], 1, 64, 16, torch.float32, gen)
    q = torch.randn(2, 2, 64, generator=gen)
    args = (q, batch.k_cache, batch.v_cache, batch.block_tables, batch.context_lens)
    assert torch.equal(paged_decode_attention(*args), paged_decode_attention(*args, backend="torch"))


def test_num_splits_heuristic():
    # LLaVA-7B on an H100 (132 SMs): one sequence splits, a full batch does not.
    assert choose_num_splits(1, 32, 1024, 64, 132) > 1
    assert choose_num_splits(256, 32, 1024, 64, 132) == 1
    assert choose_num_splits(1, 32, 64, 64, 132) == 1  # a single tile cannot be split
    assert choose_num_splits(1, 1, 1 << 20, 64, 132) <= 32


def _decode_args(**overrides):
    args = dict(
        q=torch.zeros(2, 4, 64), k_cache=torch.zeros(3, 16, 2, 64), v_cache=torch.zeros(3, 16, 2, 64),
        block_tables=torch.zeros(2, 2, dtype=torch.int32), context_lens=torch.ones(2, dtype=torch.int32),
    )
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(q=torch.zeros(2, 3, 64)), "multiple of kv heads"),
        (dict(q=torch.zeros(2, 4, 64, dtype=torch.float16)), "q dtype"),
        (dict(q=torch.zeros(2, 4, 32)), "head_dim"),
        (dict(v_cache=torch.zeros(3, 16, 2, 32)), "v_cache shape"),
        (dict(block_tables=torch.zeros(2, 2)), "block_tables must be int32"),
        (dict(block_tables=torch.zeros(3, 2, dtype=torch.int32)), "block_tables must have shape"),
        (dict(context_lens=torch.tensor([1, 33], dtype=torch.int32)), "capacity"),
        (dict(block_tables=torch.tensor([[0, 1], [5, 0]], dtype=torch.int32)), "block_tables entries"),
        (dict(backend="cuda"), "backend must be one of"),
        (dict(scale=float("nan")), "scale must be a finite number"),
    ],
)
def test_decode_rejects_bad_input(overrides, message):
    with pytest.raises(ValueError, match=message):
        paged_decode_attention(**_decode_args(**overrides))


@pytest.mark.parametrize(
    "cu_seqlens, message",
    [([0, 3], "cu_seqlens_q must have shape"), ([0, 1, 2], "cu_seqlens_q\\[-1\\]"), ([0, 1, 3], "context_lens must include")],
)
def test_prefill_rejects_bad_input(cu_seqlens, message):
    args = _decode_args()
    cu = torch.tensor(cu_seqlens, dtype=torch.int32)
    with pytest.raises(ValueError, match=message):
        paged_prefill_attention(torch.zeros(3, 4, 64), args["k_cache"], args["v_cache"], args["block_tables"], cu, args["context_lens"])


def test_store_kv_rejects_bad_input():
    cache = torch.zeros(3, 16, 2, 64)
    with pytest.raises(ValueError, match="slot_mapping entries"):
        store_kv(torch.zeros(1, 2, 64), torch.zeros(1, 2, 64), cache, cache.clone(), torch.tensor([48]))
    with pytest.raises(ValueError, match="k must have shape"):
        store_kv(torch.zeros(1, 3, 64), torch.zeros(1, 3, 64), cache, cache.clone(), torch.tensor([0]))


@pytest.mark.gpu
def test_decode_replays_in_a_cuda_graph_with_new_lengths(fresh_seed):
    """The engine captures decode in CUDA graphs: shapes fixed, q and lengths change."""
    gen = torch.Generator().manual_seed(fresh_seed)
    batch = build_paged([300, 20], 2, 128, 16, torch.bfloat16, gen, backend="triton", device="cuda")
    q = torch.randn(2, 4, 128, generator=gen).bfloat16().cuda()
    args = (q, batch.k_cache, batch.v_cache, batch.block_tables, batch.context_lens)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        paged_decode_attention(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = paged_decode_attention(*args)
    q.copy_(torch.randn(2, 4, 128, generator=gen).bfloat16())
    batch.context_lens.copy_(torch.tensor([129, 7], dtype=torch.int32))
    graph.replay()
    assert_close(static_out, paged_decode_attention(*args, backend="torch"), torch.bfloat16)


@pytest.mark.gpu
def test_auto_backend_with_flash_attn_block_size(fresh_seed):
    """With flash-attn installed and 256-token blocks, "auto" takes flash-attn's paged path."""
    pytest.importorskip("flash_attn")
    gen = torch.Generator().manual_seed(fresh_seed)
    batch = build_paged([300, 513], 2, 128, 256, torch.float16, gen, device="cuda")
    q = torch.randn(2, 4, 128, generator=gen).half().cuda()
    args = (q, batch.k_cache, batch.v_cache, batch.block_tables, batch.context_lens)
    assert_close(paged_decode_attention(*args), paged_decode_attention(*args, backend="torch"), torch.float16)
    packed, cu = _packed_queries([30, 513], 4, 128, torch.float16, gen, "cuda")
    args = (packed, batch.k_cache, batch.v_cache, batch.block_tables, cu, batch.context_lens)
    assert_close(paged_prefill_attention(*args), paged_prefill_attention(*args, backend="torch"), torch.float16)


def test_triton_backend_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        paged_decode_attention(**_decode_args(backend="triton"))
