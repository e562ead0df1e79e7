"""Paged decode attention: time and achieved bandwidth vs a gather + SDPA baseline (and
flash-attn when installed), all measured in the same run.

    python bench/paged_attention.py [--out bench/results/paged_attention_h100.md]
    python bench/paged_attention.py --threads 1 --out bench/results/paged_attention_cpu.md   # the CPU table
    (what the compiler makes of the kernels, without a GPU: bench/kernel_report.py)

On a GPU: LLaVA-7B shapes (32 heads x 128, bf16, block 16, context 700 = 576 image tokens +
prompt + response), B in {1, 16, 64, 256}; each call is captured in a CUDA graph (as the engine
runs decode) so launch overhead is not timed. GB/s = bytes of K/V read / time, shown as a
fraction of the measured device copy bandwidth.

On the CPU (``--rounds``, default 5): the engine's CPU decode shapes (the tiny LLaVA of
bench/generate.py: 24 rows x 110 tokens, 4 q / 2 kv heads x 32; LLaVA on SmolLM2-135M: 24 rows
x ~300 tokens, 9 q / 3 kv heads x 64; fp32, block 16, shuffled blocks, lengths differing per
row) and a wider batch; methods interleaved (order rotated each round), each round the mean of
--calls calls, medians with [min, max] over the rounds, the load average before and after.
Methods: ours (``paged_attention_torch``: values summed from the cache in place), the CPU path
before it (whole blocks gathered, then einsum), the reference (``paged_attention_ref``) and
gather + SDPA; then one engine-shaped prefill step, ours (SDPA per sequence) against the
reference. The Triton kernel runs in the interpreter there, so its CPU time is not a
performance number and is left out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from _timing import copy_bandwidth_gbs, device_name, interleaved, load_average, load_line, time_us, write_atomic

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from judgefree.kernels.paged_attention import paged_decode_attention  # noqa: E402
from judgefree.kernels.paged_attention_ref import (  # noqa: E402
    gather_kv,
    paged_decode_attention_ref,
    paged_prefill_attention_ref,
)
from judgefree.kernels.paged_attention_torch import paged_decode_attention_torch, paged_prefill_attention_torch  # noqa: E402
from judgefree.kernels.paged_attention_triton import choose_num_splits, paged_decode_attention_triton  # noqa: E402


def gather_sdpa_decode(q, k_cache, v_cache, block_tables, context_lens, scale):
    """Baseline: gather K/V through the block table to dense [B, L, H, D] (L = table width, no
    host sync) and run torch SDPA with a padding mask in the input dtype."""
    length = block_tables.shape[1] * k_cache.shape[1]
    keys, valid = gather_kv(k_cache, block_tables, context_lens, length)
    values, _ = gather_kv(v_cache, block_tables, context_lens, length)
    out = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, None, :], keys.transpose(1, 2), values.transpose(1, 2), attn_mask=valid[:, None, None, :],
        scale=scale, enable_gqa=q.shape[1] != k_cache.shape[2],
    )
    return out[:, :, 0, :]


def block_gather_einsum_decode(q, k_cache, v_cache, block_tables, context_lens, scale):
    """Baseline: the CPU decode path before values were summed in place (commit ef78c20's
    kernels/paged_attention_torch.py): each row's whole blocks gathered for K and V, the
    reference's einsums on them."""
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    group = num_q_heads // num_kv_heads
    length = int(context_lens.max())
    width = -(-length // block_size)
    lens = context_lens.to(torch.int64)
    valid_all = torch.arange(width * block_size)[None, :] < lens[:, None]
    valid = valid_all[:, :length]
    block_ids = block_tables[:, :width].long().where(valid_all[:, ::block_size], 0)

    def gather(cache, invalid):
        rows = cache.index_select(0, block_ids.flatten())
        if invalid is not None:
            rows.view(-1, *cache.shape[2:]).index_fill_(0, invalid, 0)
        return rows.view(batch, width * block_size, *cache.shape[2:])[:, :length]

    keys = gather(k_cache, None)
    values = gather(v_cache, (~valid_all).flatten().nonzero().flatten())
    q_grouped = q.float().view(batch, num_kv_heads, group, head_dim)
    scores = torch.einsum("bhgd,blhd->bhgl", q_grouped, keys.float()) * scale
    probs = torch.softmax(scores.masked_fill(~valid[:, None, None, :], float("-inf")), dim=-1)
    probs = probs.masked_fill((lens == 0)[:, None, None, None], 0.0)
    out = torch.einsum("bhgl,blhd->bhgd", probs, values.float())
    return out.reshape(batch, num_q_heads, head_dim).to(q.dtype)


# CPU shapes: (title, batch, context, q heads, kv heads, head_dim)
CPU_SHAPES = (
    ("tiny LLaVA (bench/generate.py)", 24, 110, 4, 2, 32),
    ("LLaVA on SmolLM2-135M", 24, 300, 9, 3, 64),
    ("SmolLM2-135M, 64 rows", 64, 300, 9, 3, 64),
)


def run_cpu(args) -> list[str]:
    """Interleaved CPU timings of ours against the previous CPU path, the reference and SDPA."""
    gen = torch.Generator().manual_seed(0)
    before = load_average()
    lines = [f"# paged decode attention on {device_name(torch.device('cpu'))}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}",
             f"(`{' '.join(['bench/paged_attention.py', *sys.argv[1:]])}`); "
             f"fp32, block 16, shuffled blocks, context lengths uniform in [context - 20, context]; {args.rounds} rounds "
             f"interleaved, each the mean of {args.calls} calls; ms per call, median [min, max]", ""]
    rows = ["| shape | B x context, q/kv heads x D | ours ms | before ms (block gather + einsum) | reference ms "
            "| gather + SDPA ms | before / ours | reference / ours | SDPA / ours |", "|---|---|---|---|---|---|---|---|---|"]
    for title, batch, context, q_heads, kv_heads, head_dim in CPU_SHAPES:
        q, k_cache, v_cache, tables, _ = make_inputs(batch, context, q_heads, kv_heads, head_dim, 16, torch.float32,
                                                     torch.device("cpu"), gen)
        lens = torch.randint(context - 20, context + 1, (batch,), generator=gen, dtype=torch.int32)
        scale = head_dim**-0.5
        fns = {
            "ours": lambda: paged_decode_attention_torch(q, k_cache, v_cache, tables, lens, scale),
            "before": lambda: block_gather_einsum_decode(q, k_cache, v_cache, tables, lens, scale),
            "reference": lambda: paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, scale),
            "sdpa": lambda: gather_sdpa_decode(q, k_cache, v_cache, tables, lens, scale),
        }
        ref = fns["reference"]()
        for name, fn in fns.items():  # every method computes the same attention (to fp32 rounding)
            error = (fn() - ref).abs().max().item()
            if error > 1e-4:
                raise RuntimeError(f"{title}: {name} and the reference disagree by {error}")

        def repeated(fn):
            return lambda: [fn() for _ in range(args.calls)]

        samples, _ = interleaved({name: repeated(fn) for name, fn in fns.items()}, args.rounds)
        ms = {name: [s / args.calls * 1e3 for s in values] for name, values in samples.items()}
        med = {name: statistics.median(values) for name, values in ms.items()}
        cell = {name: f"{med[name]:.2f} [{min(v):.2f}, {max(v):.2f}]" for name, v in ms.items()}
        rows.append(f"| {title} | {batch} x {context}, {q_heads}/{kv_heads} x {head_dim} | {cell['ours']} | "
                    f"{cell['before']} | {cell['reference']} | {cell['sdpa']} | {med['before'] / med['ours']:.2f}x | "
                    f"{med['reference'] / med['ours']:.2f}x | {med['sdpa'] / med['ours']:.2f}x |")
        print(rows[-1], flush=True)
    lines += rows + [""] + prefill_cpu(args, gen)
    lines += ["", load_line(before, load_average()),
              "Ratios are of the medians (>1: ours is faster). 'before' is the CPU path this replaced."]
    return lines


def prefill_cpu(args, gen) -> list[str]:
    """One prefill step as the engine runs it for LLaVA on SmolLM2 (9 q / 3 kv heads x 64): one
    image prompt of 290 new tokens, two responses' last prompt token recomputed over 290 cached,
    an instruction-only prompt of 15; ours (SDPA per sequence) against the reference."""
    lengths, new = [290, 290, 290, 15], [290, 1, 1, 15]
    q_heads, kv_heads, head_dim, block = 9, 3, 64, 16
    per_seq = [-(-n // block) for n in lengths]
    k_cache = torch.randn(sum(per_seq), block, kv_heads, head_dim, generator=gen)
    v_cache = torch.randn_like(k_cache)
    order = torch.randperm(sum(per_seq), generator=gen).tolist()
    tables = torch.zeros(len(lengths), max(per_seq), dtype=torch.int32)
    for seq, count in enumerate(per_seq):
        tables[seq, :count] = torch.tensor([order.pop() for _ in range(count)])
    lens = torch.tensor(lengths, dtype=torch.int32)
    cu = torch.tensor([0] + torch.tensor(new).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(int(cu[-1]), q_heads, head_dim, generator=gen)
    scale = head_dim**-0.5
    fns = {"ours": lambda: paged_prefill_attention_torch(q, k_cache, v_cache, tables, cu, lens, scale),
           "reference": lambda: paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu, lens, scale)}
    error = (fns["ours"]() - fns["reference"]()).abs().max().item()
    if error > 1e-4:
        raise RuntimeError(f"prefill: ours and the reference disagree by {error}")
    samples, _ = interleaved({name: (lambda fn=fn: [fn() for _ in range(args.calls)]) for name, fn in fns.items()},
                             args.rounds)
    ms = {name: [s / args.calls * 1e3 for s in values] for name, values in samples.items()}
    med = {name: statistics.median(values) for name, values in ms.items()}
    cell = {name: f"{med[name]:.2f} [{min(v):.2f}, {max(v):.2f}]" for name, v in ms.items()}
    return ["Prefill (one engine prefill step: new tokens " + "/".join(map(str, new)) + " of contexts "
            + "/".join(map(str, lengths)) + ", 9/3 heads x 64, fp32), ms per call, median [min, max]:", "",
            "| ours (SDPA per sequence) | reference | reference / ours |", "|---|---|---|",
            f"| {cell['ours']} | {cell['reference']} | {med['reference'] / med['ours']:.2f}x |"]


def make_inputs(batch, context, q_heads, kv_heads, head_dim, block_size, dtype, device, gen):
    """A paged cache holding ``batch`` sequences of ``context`` tokens in shuffled blocks."""
    per_seq = -(-context // block_size)
    num_blocks = batch * per_seq
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen).to(device, dtype)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen).to(device, dtype)
    tables = torch.randperm(num_blocks, generator=gen).view(batch, per_seq).int().to(device)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    q = torch.randn(batch, q_heads, head_dim, generator=gen).to(device, dtype)
    return q, k_cache, v_cache, tables, lens


def flash_decode_fn(q, lens, kv_heads, dtype):
    """flash-attn's paged decode over caches in 256-token blocks (its minimum; contents random:
    timing only), or None when flash-attn is not installed or there is no GPU."""
    if q.device.type != "cuda":
        return None
    try:
        from flash_attn import flash_attn_with_kvcache
    except ImportError:
        return None
    batch, context, head_dim = q.shape[0], int(lens[0]), q.shape[2]
    per_seq = -(-context // 256)
    k_cache = torch.randn(batch * per_seq, 256, kv_heads, head_dim, device=q.device, dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    tables = torch.arange(batch * per_seq, device=q.device, dtype=torch.int32).view(batch, per_seq)
    return lambda: flash_attn_with_kvcache(q[:, None], k_cache, v_cache, cache_seqlens=lens, block_table=tables, causal=True)


def run(args) -> list[str]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    if not gpu:
        return run_cpu(args)
    shapes, batches, dtype, context = (32, 32, 128), (1, 16, 64, 256), torch.bfloat16, 700
    q_heads, kv_heads, head_dim = shapes
    copy_gbs = copy_bandwidth_gbs(device, 1024 if gpu else 256)
    name = device_name(device)
    lines = [
        f"# paged decode attention on {name}",
        f"{q_heads} q heads / {kv_heads} kv heads x {head_dim}, {dtype}, block 16, context {context}; "
        f"copy bandwidth {copy_gbs:.3g} GB/s",
        "",
        "| B | splits | ours us | ours GB/s | of copy bw | ours 1 split us | baseline us | speedup vs baseline "
        "| flash-attn us | ours / flash |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    gen = torch.Generator().manual_seed(0)
    for batch in batches:
        q, k_cache, v_cache, tables, lens = make_inputs(batch, context, q_heads, kv_heads, head_dim, 16, dtype, device, gen)
        scale = head_dim**-0.5
        ours = lambda: paged_decode_attention(q, k_cache, v_cache, tables, lens, scale=scale)  # noqa: E731
        base = lambda: gather_sdpa_decode(q, k_cache, v_cache, tables, lens, scale)  # noqa: E731
        error = (ours().float() - base().float()).abs().max().item()
        if error > (2e-2 if dtype == torch.bfloat16 else 1e-4):
            raise RuntimeError(f"B={batch}: ours and the baseline disagree by {error}")
        ours_us, base_us = time_us(ours, device), time_us(base, device)
        kv_bytes = 2 * batch * context * kv_heads * head_dim * k_cache.element_size()
        gbs = kv_bytes / (ours_us * 1e-6) / 1e9
        splits, one_split = "-", "n/a"
        if gpu:  # the split-K heuristic against no split at all
            splits = choose_num_splits(batch, kv_heads, tables.shape[1] * 16, 64, torch.cuda.get_device_properties(device).multi_processor_count)
            single = lambda: paged_decode_attention_triton(q, k_cache, v_cache, tables, lens, scale, num_splits=1)  # noqa: E731
            one_split = f"{time_us(single, device):.1f}"
        flash = flash_decode_fn(q, lens, kv_heads, dtype)
        flash_cols = "n/a | n/a"
        if flash is not None:
            flash_us = time_us(flash, device)
            flash_cols = f"{flash_us:.1f} | {flash_us / ours_us:.2f}x"
        lines.append(
            f"| {batch} | {splits} | {ours_us:.1f} | {gbs:.3g} | {gbs / copy_gbs:.0%} | {one_split} | {base_us:.1f} "
            f"| {base_us / ours_us:.2f}x | {flash_cols} |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--rounds", type=int, default=5, help="CPU: interleaved rounds (>= 3)")
    parser.add_argument("--calls", type=int, default=5, help="CPU: calls per method per round")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; the engine benches use 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = run(args)
    print("\n".join(lines))
    if args.out:
        write_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
