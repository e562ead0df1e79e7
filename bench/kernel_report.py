"""The kernel report: every shipped kernel config built for Hopper (and Ampere) without a GPU.

    python bench/kernel_report.py [--arch 90 --arch 80] [--jobs 2] [--out bench/results/kernel_report_sm90.md]
    python bench/kernel_report.py --json               # one JSON object per line
    python bench/kernel_report.py --set judgefree.kernels.mix_sample_triton.GPU_NUM_WARPS=8   # what if

Each config is built as the JIT specialises a real call at the product's shapes
(``judgefree.kernels._build``), and the table gives what ptxas and the SASS say: registers,
spill bytes, stack, shared memory, whether it fits the SM, CTAs per SM, and per hot loop the
warp-instructions per element and the load widths. Beside it, an analytic roofline (a model:
``bench/_roofline.py``) turns bytes, FLOPs and the SASS instruction counts into time bounds
on an H100 and an H200. How to read it: docs/kernel_report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import _roofline as roofline
from _timing import write_atomic

from judgefree.kernels._build import build_in_subprocess, parse_override
from judgefree.kernels.linear_logprobs_pack import group_rows_for_l2

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


# -- the build table --------------------------------------------------------------------------

def _short_config(record: dict) -> str:
    consts, *rest = record["config"].split(" | ")
    pointer_types = next((r[5:] for r in rest if r.startswith("ptrs ")), "")
    dtype = next((t for t in ("bf16", "fp16", "fp32") if t in pointer_types.split("/")), "")
    return f"{dtype} {consts} w{record['num_warps']} s{record['num_stages']}".strip()


def _loop_name(loop: dict) -> str:
    return f"{loop['function']}:{loop['source'].rsplit(':', 1)[-1]}"


def _loads(loop: dict) -> str:
    widths = loop.get("global_loads", {})
    return " ".join(f"{n}x{w}b" for w, n in sorted(widths.items(), key=lambda kv: -int(kv[0]))) or "-"


def _hot_loops(record: dict) -> str:
    parts = []
    for loop in record["loops"]:
        if not loop["inner"] or loop["per_element"] is None:
            continue
        parts.append(f"{_loop_name(loop)} {loop['per_element']:.2f} ({_loads(loop)})")
    return "; ".join(parts) or "-"


def _cases(record: dict) -> str:
    names = [c["case"] for c in record["cases"]]
    return f"{len(names)}: {names[0]}" + (" ..." if len(names) > 1 else "")


def build_table(records: list[dict]) -> list[str]:
    lines = ["| # | kernel | config | cases | regs | spill st/ld B | stack B | smem KB | fits | CTAs/SM (limit) "
             "| design | hot loops: warp-instr/elem (global loads per thread) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(records):
        ok = r["spill_stores"] == 0 and r["spill_loads"] == 0 and r["fits"] and r["ctas_per_sm"] >= r["design_ctas"]
        lines.append(
            f"| {i} | {r['kernel']} | {_short_config(r)} | {_cases(r)} | {r['regs']} | "
            f"{r['spill_stores']}/{r['spill_loads']} | {r['stack']} | {r['smem_bytes'] / 1024:.0f} | "
            f"{'yes' if r['fits'] else 'NO'} | {r['ctas_per_sm']} ({r['occupancy_limit']}) | "
            f"{r['design_ctas']}{'' if ok else ' FAIL'} | {_hot_loops(r)} |")
    return lines


def loop_table(records: list[dict]) -> list[str]:
    lines = ["| # | loop | source | step | instr/iter | warp-instr/iter | warp-instr/elem | global loads "
             "| shared ld | wgmma / mma | forward branches |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(records):
        for loop in r["loops"]:
            if not loop["inner"]:
                continue
            per = f"{loop['per_element']:.2f}" if loop["per_element"] is not None else "-"
            shared = sum(loop.get("shared_loads", {}).values())
            lines.append(f"| {i} | {_loop_name(loop)} | `{loop['header']}` | {loop['step'] or '-'} | "
                         f"{loop['instructions']} | {loop['warp_instructions']} | {per} | {_loads(loop)} | "
                         f"{shared} | {loop['wgmma']} / {loop['mma']} | {loop['forward_branches']} |")
    return lines


# -- the roofline -----------------------------------------------------------------------------

def _find(records: list[dict], kernel: str, **shape) -> dict:
    for r in records:
        if r["kernel"] == kernel and r["arch"] == "sm_90a" and any(
                all(c["shape"].get(k) == v for k, v in shape.items()) for c in r["cases"]):
            return r
    raise KeyError(f"no sm_90a build of {kernel} for {shape}")


def _mix_sample_rows(records: list[dict]):
    for vocab in (32000, 152064):
        for batch in (1, 64, 256):
            shape = dict(batch=batch, vocab=vocab, dtype="bfloat16", mode="mix")
            builds = {kernel: _find(records, kernel, **shape) for kernel in (
                "_chunk_stats_kernel", "_one_chunk_kernel", "_candidates_kernel", "_candidate_pack_kernel",
                "_candidate_draw_kernel", "_mix_sample_kernel")}
            for top_p in (False, True):
                yield ("mix_sample", f"B={batch} V={vocab} bf16 two paths{' top-p' if top_p else ''}",
                       roofline.mix_sample(builds, batch, vocab, 2, 2, top_p))


def _linear_logprobs_rows(records: list[dict]):
    for tokens, hidden, vocab in ((8192, 4096, 32000), (8192, 576, 49152)):
        shape = dict(tokens=tokens, hidden=hidden, vocab=vocab, dtype="bfloat16")
        forward = roofline.linear_logprobs_forward(_find(records, "_forward_kernel", **shape), tokens, hidden, vocab, 2)
        label = f"N={tokens} H={hidden} V={vocab} bf16"
        yield ("linear_logprobs fwd", label, [forward])
        for weight_grad in (True, False):
            backward = roofline.linear_logprobs_backward(
                _find(records, "_backward_kernel", weight_grad=weight_grad, **shape), tokens, hidden, vocab, 2, weight_grad)
            yield (f"linear_logprobs fwd+bwd ({'weight grad' if weight_grad else 'frozen weight'})", label,
                   [forward, backward])
        yield from _filtered_rows(records, shape, label, forward)


# Fractions of backward tiles that survive gradient filtering (a property of the model and its
# data): 0.97 is what bench/linear_logprobs_live.py measured on the real SmolLM2-135M's own DPO
# samples (96-99.5 %, bench/results/linear_logprobs_live_cpu.md); 0.25 and 0.05 are assumed, a
# far more confident model, to show what filtering would then be worth.
LIVE_FRACTIONS = (0.97, 0.25, 0.05)
# Fractions of (row, vocab tile) pairs live, what the packed backward runs, measured on the same data
# (bench/results/linear_logprobs_live_cpu.md, DPO batch at 2^-12): 128-wide tiles (weight grad) 22 % at
# T = 1, 17 % at T = 0.7 / top-p 0.9; 256-wide tiles (frozen) 32 % and 26 %.
PAIR_FRACTIONS = ((0.22, 0.32), (0.17, 0.26))


def _filtered_rows(records: list[dict], shape: dict, label: str, forward: roofline.Work):
    """Filtered fwd+bwd at assumed live fractions: this kernel (the forward decides which tiles
    are dead; they skip the recompute too) beside Cut Cross-Entropy's scheme (every tile
    recomputed, then filtered) modelled with this kernel's builds at 128-wide vocab tiles."""
    tokens, hidden, vocab = shape["tokens"], shape["hidden"], shape["vocab"]
    fwd_rec = _find(records, "_forward_kernel", mode="filtered", **shape)
    fwd_tiles = roofline.linear_logprobs_forward(fwd_rec, tokens, hidden, vocab, 2)
    block_v = next(c["args"]["BLOCK_V"] for c in fwd_rec["cases"] if c["shape"].get("mode") == "filtered")
    verdicts = roofline.linear_logprobs_verdicts(tokens, vocab, block_v)
    for weight_grad in (True, False):
        mode = "filtered" if weight_grad else "filtered frozen"
        ours = _find(records, "_backward_kernel", mode=mode, **shape)
        plain = _find(records, "_backward_kernel", weight_grad=weight_grad, **shape)
        kind = "weight grad" if weight_grad else "frozen weight"
        for live in LIVE_FRACTIONS:
            yield (f"linear_logprobs fwd+bwd ({kind}), filtered, live {live:g}", label, [
                fwd_tiles, verdicts,
                roofline.linear_logprobs_backward(ours, tokens, hidden, vocab, 2, weight_grad, live, mode=mode)])
            yield (f"  same, Cut Cross-Entropy's scheme (recompute all, then filter; 128 x 128)", label, [
                forward, roofline.linear_logprobs_backward(plain, tokens, hidden, vocab, 2, weight_grad, live,
                                                           recompute_all=True, block_v=128)])
        packed_mode = "packed" if weight_grad else "packed frozen"
        packed = _find(records, "_backward_kernel", mode=packed_mode, **shape)
        case = next(c for c in packed["cases"] if c["shape"].get("mode") == packed_mode)
        group = group_rows_for_l2(tokens, hidden, 2, case["args"]["BLOCK_N"], roofline.H100.l2_bytes)
        for pairs in PAIR_FRACTIONS:
            pair = pairs[0] if weight_grad else pairs[1]
            yield (f"linear_logprobs fwd+bwd ({kind}), filtered, packed rows, live pairs {pair:g}", label, [
                fwd_tiles, verdicts, roofline.linear_logprobs_packing(tokens, vocab, case["args"]["BLOCK_V"], pair),
                roofline.linear_logprobs_packed_backward(packed, tokens, hidden, vocab, 2, weight_grad, pair, group,
                                                         mode=packed_mode)])


def _paged_decode_rows(records: list[dict]):
    model = dict(q_heads=32, kv_heads=32, head_dim=128, context=700)  # LLaVA-1.5-7B
    for batch in (1, 16, 64, 256):
        shape = dict(op="paged_decode", batch=batch, dtype="bfloat16", table_width=256, **model)
        decode = _find(records, "_decode_kernel", **shape)
        splits = next(c["args"]["NUM_SPLITS"] for c in decode["cases"]
                      if all(c["shape"].get(k) == v for k, v in shape.items()))
        launches = [roofline.paged_decode(decode, batch, 700, 32, 32, 128, 2)]
        if splits > 1:
            reduce = _find(records, "_decode_reduce_kernel", **shape)
            launches.append(roofline.decode_reduce(reduce, batch, 32, 128, splits))
        yield ("paged decode", f"LLaVA-7B B={batch} ctx=700 bf16 (splits {splits})", launches)


def roofline_rows(records: list[dict]) -> list[tuple[str, str, list[roofline.Work]]]:
    """(op, shape, the launches it takes) at the report's target shapes, for the ops whose
    sm_90a builds are among ``records``."""
    rows = []
    for op_rows in (_mix_sample_rows, _linear_logprobs_rows, _paged_decode_rows):
        try:
            rows += list(op_rows(records))
        except KeyError:  # that op was not built in this run (--kernel)
            continue
    return rows


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def roofline_table(records: list[dict]) -> tuple[list[str], list[dict]]:
    lines = ["| op | shape | programs (resident) | HBM MB | L2 MB | GFLOP | HBM us H100 / H200 | L2 us | FLOP us "
             "| issue us | latency us | bound H100 | bound H200 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    out = []
    for op, shape, launches in roofline_rows(records):
        totals = {gpu.name: {} for gpu in roofline.GPUS}
        bounds = {}
        for gpu in roofline.GPUS:
            bound, limiter = 0.0, []
            for work in launches:
                times = work.times(gpu)
                for k, v in times.items():
                    totals[gpu.name][k] = totals[gpu.name].get(k, 0.0) + v
                fixed = times.pop("launch", 0.0)  # each launch's fixed cost adds to its largest time
                key = max(times, key=times.get)
                bound += times[key] + fixed
                limiter.append(key)
            bounds[gpu.name] = (bound, "+".join(limiter))
        h100, h200 = (totals[g.name] for g in roofline.GPUS)
        programs = " + ".join(f"{w.programs} ({w.resident})" for w in launches)
        hbm, l2 = sum(w.hbm_bytes for w in launches), sum(w.l2_bytes for w in launches)
        flops = sum(w.flops for w in launches)
        unmodelled = sum(w.unmodelled_loops for w in launches)
        b100, b200 = (bounds[g.name] for g in roofline.GPUS)
        launch = f", {len(launches)} launch{'es' if len(launches) > 1 else ''} incl."
        lines.append(f"| {op} | {shape} | {programs} | {hbm / 1e6:.1f} | {l2 / 1e6:.1f} | {flops / 1e9:.1f} | "
                     f"{_us(h100['hbm'])} / {_us(h200['hbm'])} | {_us(h100['l2'])} | {_us(h100['flop'])} | "
                     f"{_us(h100['issue'])}{'*' if unmodelled else ''} | {_us(h100['latency'])} | "
                     f"{_us(b100[0])} ({b100[1]}{launch}) | {_us(b200[0])} ({b200[1]}{launch}) |")
        out.append(dict(kind="roofline", op=op, shape=shape, hbm_bytes=hbm, l2_bytes=l2, flops=flops,
                        times_h100=h100, times_h200=h200, bound_h100_s=b100[0], bound_h100=b100[1],
                        bound_h200_s=b200[0], bound_h200=b200[1], unmodelled_loops=unmodelled))
    return lines, out


# -- the report -------------------------------------------------------------------------------

def _toolchain() -> str:
    import triton
    from triton import knobs

    ptxas = subprocess.run([knobs.nvidia.ptxas.path, "--version"], capture_output=True, text=True).stdout
    version = ptxas.strip().splitlines()[-1] if ptxas.strip() else "?"
    return f"Triton {triton.__version__}, ptxas {version}"


def report(records: list[dict], arches: list[int], seconds: float, load: tuple[float, ...], command: str) -> list[str]:
    lines = [f"# Kernel report ({', '.join(f'sm_{a}' + ('a' if a == 90 else '') for a in arches)})", "",
             f"`{command}`: {len(records)} builds in {seconds:.0f} s on this CPU (load average "
             f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}); {_toolchain()}. No GPU ran: registers, spills, "
             "stack, shared memory and the SASS are compiler facts; occupancy follows from them and the SM's "
             "limits; the roofline is a model. How to read it: docs/kernel_report.md.", ""]
    for arch in arches:
        name = f"sm_{arch}{'a' if arch == 90 else ''}"
        of_arch = [r for r in records if r["arch"] == name]
        failing = [i for i, r in enumerate(of_arch) if r["spill_stores"] or r["spill_loads"] or not r["fits"]
                   or r["ctas_per_sm"] < r["design_ctas"]]
        lines += [f"## Builds for {name}", "",
                  f"{len(of_arch)} unique builds; {len(failing)} spill, do not fit, or miss their design occupancy"
                  + (f" (rows {', '.join(map(str, failing))})" if failing else "") + ".", ""]
        lines += build_table(of_arch) + [""]
        if arch == 90:
            lines += [f"### Hot loops ({name}, innermost loops of each build)", ""] + loop_table(of_arch) + [""]
    table, _ = roofline_table(records)
    if len(table) > 2:
        lines += ["## Roofline (a model, sm_90a builds)", ""]
        lines += [f"- {a}" for a in roofline.assumptions()]
        lines += ["- The bound of a launch is its largest time; an op's bound adds its launches. `*`: a loop the model "
                  "does not place (its instructions are left out).", ""] + table + [""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, action="append", help="90 (sm_90a, the default) and/or 80")
    parser.add_argument("--jobs", type=int, default=2, help="compiler processes (default 2)")
    parser.add_argument("--kernel", action="append", help="only these kernels (function names)")
    parser.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                        help="override a launch setting before building (what-if; see judgefree.kernels._build)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of the tables")
    parser.add_argument("--out", help="also write the markdown report to this file")
    parser.add_argument("--records", action="append", help="render the build records of earlier --json runs "
                        "instead of building")
    args = parser.parse_args()
    arches = args.arch or [90]
    overrides = dict(parse_override(text) for text in args.set)
    start = time.perf_counter()
    if args.records:
        records = []
        for path in args.records:
            with open(path) as saved:
                records += [r for r in map(json.loads, saved) if r.get("kind") == "build"]
        arches = sorted({int(r["arch"][3:5]) for r in records}, reverse=True)
    else:
        records = build_in_subprocess(arches, jobs=args.jobs, kernels=args.kernel, overrides=overrides)
    seconds = time.perf_counter() - start
    if args.json:
        for r in records:
            print(json.dumps(dict(kind="build", **r)))
        for row in roofline_table(records)[1]:
            print(json.dumps(row))
        return
    lines = report(records, arches, seconds, os.getloadavg(), "python " + " ".join(sys.argv))
    print("\n".join(lines))
    if args.out:
        write_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
