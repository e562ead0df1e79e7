"""Triton kernels for the paged KV cache: store K/V, decode attention (split-K), prefill attention.

Decode is memory-bound, so one program serves a (sequence, kv head) pair and all the q heads
of its group: every K/V tile is read once per group. Tiles of ``BLOCK_N`` tokens are gathered
through the block table token by token, so the tile size does not depend on the cache's
block size. With few sequences (fewer programs than SMs) each sequence's context is cut into
``num_splits`` chunks (flash-decoding) whose partial results a small kernel merges by their
log-sum-exp. Softmax runs online in fp32 in the exp2 domain. Arguments are assumed checked
by ``paged_attention``.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


@triton.jit
def _store_kv_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    stride_kt, stride_kh, stride_kd, stride_vt, stride_vh, stride_vd,
    stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    KV_BLOCK_SIZE: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot < 0:  # padding row
        return
    block, offset = slot // KV_BLOCK_SIZE, slot % KV_BLOCK_SIZE
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < NUM_KV_HEADS) & (d < HEAD_DIM)
    k = tl.load(k_ptr + token * stride_kt + h * stride_kh + d * stride_kd, mask=mask)
    v = tl.load(v_ptr + token * stride_vt + h * stride_vh + d * stride_vd, mask=mask)
    k_dst = k_cache_ptr + block * stride_kcb + offset * stride_kcs + h * stride_kch + d
    v_dst = v_cache_ptr + block * stride_vcb + offset * stride_vcs + h * stride_vch + d
    tl.store(k_dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _attend_tile(
    q, m_i, l_i, acc, tokens, token_mask, valid, table_row, k_cache_ptr, v_cache_ptr, kv_head, d, d_mask, scale_log2e,
    stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    KV_BLOCK_SIZE: tl.constexpr, FP32_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One online-softmax step of the q rows over the K/V of ``tokens`` (read where
    ``token_mask``); scores where not ``valid`` (broadcast to [rows, tokens]) are dropped."""
    block_ids = tl.load(table_row + tokens // KV_BLOCK_SIZE, mask=token_mask, other=0).to(tl.int64)
    offsets = tokens % KV_BLOCK_SIZE
    kv_mask = token_mask[:, None] & d_mask[None, :]
    block_ids, offsets = block_ids[:, None], offsets[:, None]
    k_src = k_cache_ptr + block_ids * stride_kb + offsets * stride_ks + kv_head * stride_kh + d[None, :]
    v_src = v_cache_ptr + block_ids * stride_vb + offsets * stride_vs + kv_head * stride_vh + d[None, :]
    k = tl.load(k_src, mask=kv_mask, other=0.0)
    v = tl.load(v_src, mask=kv_mask, other=0.0)
    if FP32_DOT:  # the interpreter's bf16 dot is wrong
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2e
    scores = tl.where(valid, scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing valid yet
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(scores - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def _decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, out_ptr, part_out_ptr, part_lse_ptr,
    scale_log2e,
    stride_qb, stride_qh, stride_qd, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_tb, stride_ob, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
    KV_BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
    FP32_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq).to(tl.int32)
    # This program's chunk of the context: whole tiles, NUM_SPLITS chunks per sequence.
    tiles_per_split = tl.cdiv(tl.cdiv(context_len, BLOCK_N), NUM_SPLITS)
    start = split * tiles_per_split * BLOCK_N
    end = tl.minimum(start + tiles_per_split * BLOCK_N, context_len)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + g
    g_mask, d_mask = g < GROUP, d < HEAD_DIM
    q_mask = g_mask[:, None] & d_mask[None, :]
    q = tl.load(q_ptr + seq * stride_qb + heads[:, None] * stride_qh + d[None, :] * stride_qd, mask=q_mask, other=0.0)
    if FP32_DOT:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    table_row = block_tables_ptr + seq * stride_tb
    for tile_start in range(start, end, BLOCK_N):
        tokens = tile_start + tl.arange(0, BLOCK_N)
        token_mask = tokens < end
        m_i, l_i, acc = _attend_tile(
            q, m_i, l_i, acc, tokens, token_mask, token_mask[None, :], table_row, k_cache_ptr, v_cache_ptr,
            kv_head, d, d_mask, scale_log2e,
            stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, KV_BLOCK_SIZE, FP32_DOT, DOT_PRECISION,
        )
    # An empty chunk (or context) leaves l_i = 0: its output is 0 and its weight exp2(-inf) = 0.
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    if NUM_SPLITS == 1:
        out_ptrs = out_ptr + seq * stride_ob + heads[:, None] * stride_oh + d[None, :]
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=q_mask)
    else:
        rows = (seq * tl.num_programs(1) * GROUP + heads) * NUM_SPLITS + split  # [B, q_heads, splits]
        tl.store(part_out_ptr + rows[:, None] * BLOCK_D + d[None, :], out, mask=q_mask)
        lse = tl.where(l_i > 0, m_i + tl.log2(l_safe), float("-inf"))
        tl.store(part_lse_ptr + rows, lse, mask=g_mask)


@triton.jit
def _decode_reduce_kernel(
    part_out_ptr, part_lse_ptr, out_ptr, stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Merge the split partials of one (sequence, q head) by their log-sum-exp weights."""
    seq = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    row = seq * tl.num_programs(1) + head
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    s_mask, d_mask = s < NUM_SPLITS, d < HEAD_DIM
    lse = tl.load(part_lse_ptr + row * NUM_SPLITS + s, mask=s_mask, other=float("-inf"))
    lse_max = tl.max(lse, 0)
    weights = tl.exp2(lse - tl.where(lse_max == float("-inf"), 0.0, lse_max))
    part_rows = (row * NUM_SPLITS + s)[:, None]
    parts = tl.load(part_out_ptr + part_rows * BLOCK_D + d[None, :], mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    total = tl.sum(weights, 0)
    out = tl.sum(weights[:, None] * parts, 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d_mask)


@triton.jit
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, cu_seqlens_ptr, context_lens_ptr, out_ptr,
    scale_log2e, num_seqs,
    stride_qt, stride_qh, stride_qd, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_tb, stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, KV_BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FP32_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1)
    kv_head = head // GROUP
    # Tiles of sequence i are numbered from cu[i] // BLOCK_M + i (an upper bound needing no
    # host sync): binary-search the sequence that owns this tile.
    lo = 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(cu_seqlens_ptr + mid) // BLOCK_M + mid <= tile:
            lo = mid + 1
        else:
            hi = mid
    seq = lo - 1
    q_start = tl.load(cu_seqlens_ptr + seq).to(tl.int32)
    q_len = tl.load(cu_seqlens_ptr + seq + 1).to(tl.int32) - q_start
    local = tile - (q_start // BLOCK_M + seq)
    if local * BLOCK_M >= q_len:  # spare tile of the upper bound
        return
    context_len = tl.load(context_lens_ptr + seq).to(tl.int32)
    prefix_len = context_len - q_len
    rows = local * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < q_len
    q_pos = prefix_len + rows
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HEAD_DIM
    q_mask = row_mask[:, None] & d_mask[None, :]
    token_rows = (q_start + rows).to(tl.int64)
    q_src = q_ptr + token_rows[:, None] * stride_qt + head * stride_qh + d[None, :] * stride_qd
    q = tl.load(q_src, mask=q_mask, other=0.0)
    if FP32_DOT:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    table_row = block_tables_ptr + seq.to(tl.int64) * stride_tb
    key_end = tl.minimum(prefix_len + (local + 1) * BLOCK_M, context_len)  # causal: up to the last row
    for key_start in range(0, key_end, BLOCK_N):
        keys = key_start + tl.arange(0, BLOCK_N)
        key_mask = keys < key_end
        valid = (keys[None, :] <= q_pos[:, None]) & key_mask[None, :]
        m_i, l_i, acc = _attend_tile(
            q, m_i, l_i, acc, keys, key_mask, valid, table_row, k_cache_ptr, v_cache_ptr,
            kv_head, d, d_mask, scale_log2e,
            stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, KV_BLOCK_SIZE, FP32_DOT, DOT_PRECISION,
        )
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    out_dst = out_ptr + token_rows[:, None] * stride_ot + head * stride_oh + d[None, :]
    tl.store(out_dst, out.to(out_ptr.dtype.element_ty), mask=q_mask)


_LOG2E = 1.4426950408889634
_MAX_SPLITS = 32


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _dot_flags(dtype: torch.dtype, device: torch.device) -> tuple[bool, str]:
    """(cast to fp32 before tl.dot, tl.dot precision): the interpreter's bf16 dot is broken,
    and fp32 inputs get exact fp32 products instead of tf32."""
    return dtype == torch.bfloat16 and device.type != "cuda", "ieee" if dtype == torch.float32 else "tf32"


def choose_num_splits(batch: int, num_kv_heads: int, max_context: int, block_n: int, num_sms: int) -> int:
    """Context chunks per sequence for decode: split only when (sequence, kv head) programs
    cannot fill the GPU, aiming at about two programs per SM. Shape-only, so graph-safe."""
    programs = batch * num_kv_heads
    max_tiles = triton.cdiv(max_context, block_n)
    if programs >= num_sms or max_tiles < 2:
        return 1
    return max(1, min(triton.cdiv(2 * num_sms, programs), max_tiles, _MAX_SPLITS))


def store_kv_triton(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Triton ``store_kv``: one program per token row, -1 slots skipped."""
    num_tokens, num_kv_heads, head_dim = k.shape
    if num_tokens == 0:
        return
    _store_kv_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping,
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, BLOCK_H=triton.next_power_of_2(num_kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim), KV_BLOCK_SIZE=k_cache.shape[1],
    )


def paged_decode_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    *,
    num_splits: int | None = None, block_n: int = 64,
) -> torch.Tensor:
    """Triton decode attention; ``num_splits`` None picks it from the shapes (1 off CUDA)."""
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads, kv_block_size = k_cache.shape[2], k_cache.shape[1]
    group = num_q_heads // num_kv_heads
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # contiguous: the kernels store with head_dim stride 1
    if batch == 0:
        return out
    if num_splits is None:  # the interpreter runs programs one by one: splitting gains nothing there
        max_context = block_tables.shape[1] * kv_block_size
        sms = _num_sms(q.device.index or 0) if q.is_cuda else 1
        num_splits = choose_num_splits(batch, num_kv_heads, max_context, block_n, sms)
    block_d = triton.next_power_of_2(max(head_dim, 16))
    if num_splits > 1:
        part_out = torch.empty(batch, num_q_heads, num_splits, block_d, dtype=torch.float32, device=q.device)
        part_lse = torch.empty(batch, num_q_heads, num_splits, dtype=torch.float32, device=q.device)
    else:
        part_out = part_lse = out  # unused
    fp32_dot, precision = _dot_flags(q.dtype, q.device)
    _decode_kernel[(batch, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, part_out, part_lse, scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_D=block_d,
        KV_BLOCK_SIZE=kv_block_size, BLOCK_N=block_n, NUM_SPLITS=num_splits, FP32_DOT=fp32_dot, DOT_PRECISION=precision,
        num_warps=4, num_stages=2,
    )
    if num_splits > 1:
        _decode_reduce_kernel[(batch, num_q_heads)](
            part_out, part_lse, out, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, BLOCK_D=block_d, NUM_SPLITS=num_splits, BLOCK_S=triton.next_power_of_2(num_splits),
            num_warps=4,
        )
    return out


def paged_prefill_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    *,
    block_m: int = 64, block_n: int = 64,
) -> torch.Tensor:
    """Triton prefill/extend attention over packed new tokens; no host sync."""
    total, num_q_heads, head_dim = q.shape
    batch = block_tables.shape[0]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # contiguous: the kernels store with head_dim stride 1
    if total == 0 or batch == 0:
        return out
    fp32_dot, precision = _dot_flags(q.dtype, q.device)
    grid = (triton.cdiv(total, block_m) + batch, num_q_heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, out, scale * _LOG2E, batch,
        q.stride(0), q.stride(1), q.stride(2), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=num_q_heads // k_cache.shape[2], HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(max(head_dim, 16)),
        KV_BLOCK_SIZE=k_cache.shape[1], BLOCK_M=block_m, BLOCK_N=block_n, FP32_DOT=fp32_dot, DOT_PRECISION=precision,
        num_warps=4, num_stages=2,
    )
    return out


# CTAs per SM each kernel's launch is designed for: decode aims at about two programs per SM
# (``choose_num_splits``); a prefill tile and the small kernels at least two as well.
DESIGN_CTAS_PER_SM = {"_decode_kernel": 2, "_decode_reduce_kernel": 2, "_prefill_kernel": 2, "_store_kv_kernel": 2}


def build_cases():
    """The shipped configs at the product's shapes, for ``judgefree.kernels._build``: every
    model's attention heads, bf16 and fp16, a 700-token context (LLaVA-1.5: 576 image tokens +
    prompt + response) in 16-token blocks; decode at batch 1 to 256 both as the CUDA graphs
    run it (block tables max_model_len / block_size wide) and eagerly (as wide as the
    longest context), which changes the split count and the table stride's specialisation;
    prefill of one sequence and of several; store_kv."""
    from judgefree.kernels._build import LaunchCase
    from judgefree.kernels._product_shapes import (CONTEXT, DECODE_BATCHES, DTYPES, KV_BLOCK_SIZE,
                                                   MAX_MODEL_LEN, MODELS)

    def cache(model, dt, batch):
        blocks = batch * -(-CONTEXT // KV_BLOCK_SIZE)
        shape = (blocks, KV_BLOCK_SIZE, model.kv_heads, model.head_dim)
        return torch.empty(shape, dtype=dt, device="cuda"), torch.empty(shape, dtype=dt, device="cuda")

    def decode(model, dtype, batch, width):
        def call():
            dt = getattr(torch, dtype)
            k_cache, v_cache = cache(model, dt, batch)
            q = torch.empty(batch, model.q_heads, model.head_dim, dtype=dt, device="cuda")
            tables = torch.zeros(max(batch, 1), width, dtype=torch.int32, device="cuda")[:batch]
            lens = torch.full((batch,), CONTEXT, dtype=torch.int32, device="cuda")
            paged_decode_attention_triton(q, k_cache, v_cache, tables, lens, model.head_dim ** -0.5)
        return call

    def prefill(model, dtype, seqs):
        def call():
            dt = getattr(torch, dtype)
            k_cache, v_cache = cache(model, dt, seqs)
            q = torch.empty(seqs * CONTEXT, model.q_heads, model.head_dim, dtype=dt, device="cuda")
            width = -(-CONTEXT // KV_BLOCK_SIZE)
            tables = torch.zeros(seqs, width, dtype=torch.int32, device="cuda")
            cu = torch.zeros(seqs + 1, dtype=torch.int32, device="cuda")
            lens = torch.full((seqs,), CONTEXT, dtype=torch.int32, device="cuda")
            paged_prefill_attention_triton(q, k_cache, v_cache, tables, cu, lens, model.head_dim ** -0.5)
            k = torch.empty(seqs * CONTEXT, model.kv_heads, model.head_dim, dtype=dt, device="cuda")
            slots = torch.zeros(seqs * CONTEXT, dtype=torch.int64, device="cuda")
            store_kv_triton(k, k, k_cache, v_cache, slots)
        return call

    # Every model's attention heads in bf16 (LLaVA-1.5 also in fp16, its release dtype); the
    # full batch sweep and the eager tables at the LLaVA-7B shapes of the roofline.
    primary = MODELS[0]
    heads = list({(m.q_heads, m.kv_heads, m.head_dim): m for m in reversed(MODELS)}.values())[::-1]  # first of each
    cases = []
    for model in heads:
        for dtype in DTYPES if model.name.startswith("LLaVA") else DTYPES[:1]:
            full = model is primary
            shape = dict(q_heads=model.q_heads, kv_heads=model.kv_heads, head_dim=model.head_dim, dtype=dtype,
                         context=CONTEXT, model=model.name)
            modes = [("graph", MAX_MODEL_LEN // KV_BLOCK_SIZE)]
            if full and dtype == DTYPES[0]:
                modes.append(("eager", -(-CONTEXT // KV_BLOCK_SIZE)))
            for batch in DECODE_BATCHES if full else (DECODE_BATCHES[0], DECODE_BATCHES[2]):
                for mode, width in modes:
                    cases.append(LaunchCase(f"paged decode ({mode}) {model.name} B={batch} {dtype}",
                                            decode(model, dtype, batch, width), DESIGN_CTAS_PER_SM,
                                            dict(shape, op="paged_decode", batch=batch, table_width=width)))
            for seqs in (1, 8, 16) if full else (1, 16):
                cases.append(LaunchCase(f"paged prefill {model.name} {seqs} x {CONTEXT} tokens {dtype}",
                                        prefill(model, dtype, seqs), DESIGN_CTAS_PER_SM,
                                        dict(shape, op="paged_prefill", batch=seqs)))
    return cases
