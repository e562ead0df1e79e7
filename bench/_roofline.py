"""An analytic roofline for the kernels at their target shapes: a model, not a measurement.

For each launch it counts the bytes that must come from HBM, the bytes that pass through L2,
the FLOPs, and the warp-instructions (from the SASS counts of the compiled build: each
loop's static instruction count times its iterations at the shape), and turns each into a
lower bound on time on an H100 and an H200. A kernel cannot be faster than the largest of
them. The assumptions are the constants below and the per-op traffic formulas; every one of
them is printed with the table (``assumptions()``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import textwrap
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GPUModel:
    name: str
    hbm_spec: float  # B/s, datasheet
    hbm: float  # B/s, a device copy measured on this project's GPU machine
    l2_bandwidth: float  # B/s, assumed
    l2_bytes: float
    sms: int
    clock: float  # Hz, maximum boost
    ipc: float  # warp-instructions issued per cycle per SM
    flops: float  # dense bf16 tensor-core FLOP/s, measured (H100) / assumed equal (H200)
    hbm_latency: float  # s, loaded
    l2_latency: float  # s
    launch: float = 1.5e-6  # s, the fixed cost of one dependent kernel launch (assumed; see assumptions())


# H100 SXM and H200 share the GH100 die: 132 SMs, 50 MB L2, the same clocks; they differ in HBM.
H100 = GPUModel("H100 SXM", 3.35e12, 3.0e12, 7.0e12, 50e6, 132, 1.98e9, 4.0, 790e12, 600e-9, 250e-9)
H200 = GPUModel("H200", 4.8e12, 4.3e12, 7.0e12, 50e6, 132, 1.98e9, 4.0, 790e12, 600e-9, 250e-9)
GPUS = (H100, H200)
SEARCH_PASSES = 4  # mix_sample's threshold search passes per filter (docs/mix_sample.md: 4-7 for top-k + top-p)
# mix_sample's top-p candidate path: candidates p >= (1 - top_p) / V as a fraction of V (measured on the
# real SmolLM2-135M at T = 1, h = 0.5, top-p 0.9: median 3.6 %, 90th percentile 9.2 %; the model takes
# the 90th percentile), and the exact search's passes over tau's bucket (a few hundred values)
CANDIDATE_FRACTION = 0.092
DENSE_SEARCH_PASSES = 3
BUCKET_CANDIDATES = 165  # in tau's bucket at that setting: the 90th percentile of the same probe


def assumptions() -> list[str]:
    g = H100
    return [
        f"HBM: {H100.name} {H100.hbm / 1e12:.1f} TB/s, {H200.name} {H200.hbm / 1e12:.1f} TB/s (device copies measured "
        f"on this project's GPU machine; datasheet {H100.hbm_spec / 1e12:.2f} / {H200.hbm_spec / 1e12:.1f} TB/s).",
        f"L2: {g.l2_bytes / 1e6:.0f} MB, {g.l2_bandwidth / 1e12:.0f} TB/s assumed (published microbenchmarks give "
        "5.5 TB/s on the 114-SM H100 PCIe; scaled to 132 SMs at SXM clocks; the least certain number here).",
        f"Tensor cores: {g.flops / 1e12:.0f} TFLOP/s bf16 dense (measured matmul on the H100; H200 assumed equal).",
        f"Issue: {g.sms} SMs x {g.ipc:.0f} warp-instructions/cycle (the peak: one per scheduler) x "
        f"{g.clock / 1e9:.2f} GHz (max boost): a lower bound; sustained IPC is often 2-3, so an issue bound "
        "within 2x of the memory bound already puts the bandwidth goal at risk. SMs without a program issue nothing.",
        f"Latency: bytes in flight = resident CTAs x the bytes one iteration of the hot loop loads (SASS load widths "
        f"x threads); bandwidth <= in flight / latency ({g.hbm_latency * 1e9:.0f} ns HBM, "
        f"{g.l2_latency * 1e9:.0f} ns L2).",
        "Data reuse: a re-read hits L2 when the data in use by the resident CTAs fits in L2, otherwise it is "
        "counted again from HBM.",
        f"mix_sample: top-p rows take the candidate path: candidates are {CANDIDATE_FRACTION:.1%} of V (the 90th "
        "percentile measured on SmolLM2-135M), copied to a dense per-row list (launch 3b, which also sums each "
        "chunk's mass at the 16 thresholds) that the per-row draw reads in full blocks (the bucket gather, the "
        f"chunk pick half of one pass on average), {DENSE_SEARCH_PASSES} "
        f"exact-search passes on tau's bucket of {BUCKET_CANDIDATES} values (same probe, 90th percentile), the "
        f"race on one chunk's candidates; the full search ({SEARCH_PASSES} passes) only for rows it cannot "
        "serve (not modelled); top-k off; sampled rows (the greedy-only loop runs no iteration).",
        f"Launches: each kernel launch adds a fixed {g.launch * 1e6:.1f} us to its bound (assumed: the gap between "
        "dependent kernels plus the first wave's ramp; nearer 1 us inside a CUDA graph, 3-5 us for eager launches "
        "from Python). A multi-kernel op pays it once per launch.",
    ]


@dataclass(slots=True)
class Work:
    """What one kernel launch must do at a shape."""

    kernel: str
    programs: int
    resident: int  # CTAs that run at once
    hbm_bytes: float
    l2_bytes: float
    flops: float
    warp_instructions: float
    bytes_in_flight: float
    unmodelled_loops: int = 0
    fixed_s: float = 0.0  # host-side cost beside the launch (torch ops' launches, host syncs)

    def times(self, gpu: GPUModel) -> dict[str, float]:
        active_sms = min(self.programs, gpu.sms)
        in_flight = max(self.bytes_in_flight, 1.0)
        l2_only = max(self.l2_bytes - self.hbm_bytes, 0.0)
        return {
            "hbm": self.hbm_bytes / gpu.hbm,
            "l2": self.l2_bytes / gpu.l2_bandwidth,
            "flop": self.flops / gpu.flops,
            "issue": self.warp_instructions / (active_sms * gpu.ipc * gpu.clock),
            "latency": self.hbm_bytes * gpu.hbm_latency / in_flight + l2_only * gpu.l2_latency / in_flight,
            "launch": gpu.launch + self.fixed_s,  # fixed, added to the launch's largest time (not a competing bound)
        }


def _resident(record: dict, programs: int, gpu: GPUModel = H100) -> int:
    return min(programs, gpu.sms * max(record["ctas_per_sm"], 1))


def _loop_bytes(loop: dict, num_warps: int) -> float:
    """Bytes one iteration of ``loop`` loads from global memory across the CTA."""
    return sum(int(width) // 8 * count for width, count in loop.get("global_loads", {}).items()) * 32 * num_warps


def _issue(record: dict, iterations: list[float | None], programs: int) -> tuple[float, int]:
    warps = record["num_warps"]
    total = record["outside_loops"] * warps * programs
    unmodelled = 0
    for loop, n in zip(record["loops"], iterations):
        if n is None:
            unmodelled += 1
            continue
        total += loop["own_instructions"] * warps * n
    return total, unmodelled


def _case(record: dict, **shape) -> dict:
    for case in record["cases"]:
        if all(case["shape"].get(k) == v for k, v in shape.items()):
            return case
    raise KeyError(f"no case of {record['kernel']} with {shape}")


# -- mix_sample -------------------------------------------------------------------------------

def _top_level_ifs(record: dict) -> dict[str, range]:
    """Source lines (of the kernel's file) of each top-level ``if`` body of the kernel, by the
    text of its test."""
    fn = getattr(importlib.import_module(record["module"]), record["kernel"]).fn
    lines, first = inspect.getsourcelines(fn)
    out = {}
    for node in ast.parse(textwrap.dedent("".join(lines))).body[0].body:
        if isinstance(node, ast.If):
            out[ast.unparse(node.test)] = range(node.body[0].lineno + first - 1, node.body[-1].end_lineno + first)
    return out


def _straight_line(record: dict, skipped: set[str]) -> int:
    """Instructions outside loops that a row executes: all but those on the lines of the
    top-level ``if`` bodies it skips (by test text; needs the build's ``outside_lines``, else
    all are counted)."""
    if "outside_lines" not in record:
        return record["outside_loops"]
    bodies = [lines for test, lines in _top_level_ifs(record).items() if test in skipped]
    return record["outside_loops"] - sum(n for line, n in record["outside_lines"].items()
                                         if line.isdigit() and any(int(line) in body for body in bodies))


def _row_launch(record: dict, batch: int, instructions: float, unmodelled: int, hbm: float, l2: float,
                in_flight: float) -> Work:
    return Work(record["kernel"], batch, _resident(record, batch), hbm, l2, 0.0, instructions, in_flight, unmodelled)


# the per-row kernel's top-level branches (test text) a row skips there when an earlier launch
# served it (the one-chunk draw without filters, the candidate draw with top-p)
_SERVED_ROW_SKIPS = {"contrast", "(top_k > 0) & (top_k < V)", "(top_p < 1.0) & ~skip", "greedy", "~skip"}


def mix_sample(records: dict[str, dict], batch: int, vocab: int, dtype_bytes: int, paths: int, top_p: bool,
               chunk: int = 2048) -> list[Work]:
    """The launches a batch of sampled mix rows runs (``records``: the builds by kernel name).
    Without filters: the chunk statistics (one program per (row, chunk), straight-line code,
    every logit read once), the one-chunk draw (their partials and one chunk) and the per-row
    kernel (nothing to do). With top-p: the statistics, the candidates (rows x chunks: the
    logits read again, the candidates written), the candidate draw (per row: loops over the
    chunks' candidates, the exact search on tau's bucket) and the per-row kernel with nothing
    to do. A row runs only the straight-line code of the branches it takes (``_straight_line``)."""
    stats, one_chunk, record = (records[k] for k in ("_chunk_stats_kernel", "_one_chunk_kernel", "_mix_sample_kernel"))
    row_bytes = vocab * dtype_bytes * paths
    chunks = math.ceil(vocab / chunk)
    programs = batch * chunks
    resident = _resident(stats, programs)
    partials = programs * 7 * 4
    stats_instructions, stats_unmodelled = _issue(stats, [None] * len(stats["loops"]), programs)
    # no loop: every program issues its chunk's loads up front (16 tokens x paths per thread)
    launches = [Work(stats["kernel"], programs, resident, batch * row_bytes + partials, batch * row_bytes, 0.0,
                     stats_instructions, resident * chunk * dtype_bytes * paths, stats_unmodelled)]
    drawn = batch * chunk * dtype_bytes * paths  # the drawn chunk (just read by launch 1: counted anyway)
    # top-p rows skip the one-chunk draw (and store their statistics); rows without filters the reverse
    tests = _top_level_ifs(one_chunk)
    unfiltered_test = next((t for t in tests if t.startswith("_unfiltered")), "")
    skipped = {t for t in tests if (t == unfiltered_test) == top_p}
    instructions, unmodelled = _issue(dict(one_chunk, outside_loops=_straight_line(one_chunk, skipped)),
                                      [None] * len(one_chunk["loops"]), batch)
    launches.append(_row_launch(one_chunk, batch, instructions, unmodelled,
                                0.0 if top_p else partials + drawn, 0.0 if top_p else partials + drawn,
                                _resident(one_chunk, batch) * chunk * dtype_bytes * paths))
    if top_p:
        launches += _candidate_path(records["_candidates_kernel"], records["_candidate_pack_kernel"],
                                    records["_candidate_draw_kernel"], batch, vocab, dtype_bytes, paths, chunk, partials)
    # The per-row kernel: every row here was served before it, so its loops run no iteration.
    loops = record["loops"]
    instructions, unmodelled = _issue(dict(record, outside_loops=_straight_line(record, _SERVED_ROW_SKIPS)),
                                      [0 if loop["step"] or loop["function"] == "_threshold_search" else None
                                       for loop in loops], batch)
    launches.append(_row_launch(record, batch, instructions, unmodelled, 0.0, 0.0, 0.0))
    return launches


def _candidate_path(candidates: dict, pack: dict, draw: dict, batch: int, vocab: int, dtype_bytes: int, paths: int,
                    chunk: int, partials: float) -> list[Work]:
    """Launches 3, 3b and 4 of mix_sample for sampled top-p rows, at CANDIDATE_FRACTION candidates."""
    row_bytes = vocab * dtype_bytes * paths
    chunks = math.ceil(vocab / chunk)
    programs = batch * chunks
    per_chunk = CANDIDATE_FRACTION * min(chunk, vocab)
    per_row = CANDIDATE_FRACTION * vocab
    written = batch * (per_row * 8 + chunks * 8)  # int64 candidates, count and mass per chunk
    instructions, unmodelled = _issue(candidates, [None] * len(candidates["loops"]), programs)
    reread = batch * row_bytes  # the statistics just read the same logits: from L2 when they fit
    row_stats = programs * 16  # each program reads its row's statistics (launch 2 combined them)
    hbm = (reread if reread > H100.l2_bytes else 0.0) + written + row_stats
    resident = _resident(candidates, programs)
    out = [Work(candidates["kernel"], programs, resident, hbm, reread + written + row_stats, 0.0, instructions,
                resident * chunk * dtype_bytes * paths, unmodelled)]
    # 3b: each (row, chunk) copies its segment to the row's dense list (L2 both ways) and stores its
    # mass at launch 4's thresholds (NUM_PIVOTS floats)
    pack_block = pack["cases"][0]["args"]["BLOCK"]
    pivot_masses = programs * pack["cases"][0]["args"]["NUM_PIVOTS"] * 4
    instructions, unmodelled = _issue(pack, [programs * math.ceil(per_chunk / pack_block)], programs)
    resident = _resident(pack, programs)
    out.append(Work(pack["kernel"], programs, resident, 0.0, 2 * written + pivot_masses, 0.0, instructions,
                    resident * pack_block * 8, unmodelled))
    # 4: its own loops in source order: greedy-only first argmax, bucket gather, kept bucket mass,
    # the chunk pick (a while loop, stops at the crossing), the race (the threshold masses are 3b's)
    block = draw["cases"][0]["args"]["BLOCK"]
    search_block = draw["cases"][0]["args"]["SEARCH_BLOCK"]
    row_blocks = math.ceil(per_row / block)
    bucket_blocks = math.ceil(BUCKET_CANDIDATES / search_block)
    own = [i for i, lp in enumerate(draw["loops"]) if lp["function"] == draw["kernel"]]
    if len(own) != 5:
        raise ValueError(f"{draw['kernel']}: {len(own)} loops, the model knows 5 (update _candidate_path)")
    per_own = dict(zip(own, (0, row_blocks, bucket_blocks, (row_blocks + 1) / 2,
                             math.ceil(per_chunk / draw["cases"][0]["args"]["RACE_BLOCK"]))))
    iterations = []
    for i, loop in enumerate(draw["loops"]):
        if i in per_own:
            iterations.append(batch * per_own[i])
        elif loop["function"] == "_dense_search":  # the passes, and the blocks of tau's bucket in each
            iterations.append(batch * DENSE_SEARCH_PASSES * (bucket_blocks if loop["step"] else 1))
        else:
            iterations.append(None)
    instructions, unmodelled = _issue(draw, iterations, batch)
    # from L2: 3b's threshold masses, the gather a candidate's low word (4 B), the chunk pick both
    # words over half the list on average, the race one segment
    read = batch * (per_row * (4 + 8 / 2) + per_chunk * 8) + partials + pivot_masses
    # in flight: one block of the dense list (its low words: the passes load 32 bits a candidate)
    out.append(_row_launch(draw, batch, instructions, unmodelled, 0.0, read, _resident(draw, batch) * block * 4))
    return out


# -- linear_logprobs --------------------------------------------------------------------------

def _gemm_loops(record: dict, tiles: int, k_steps: int) -> list[float | None]:
    """Loops over H run k_steps per (token block, vocab block) tile; a loop over vocab blocks once per tile."""
    out = []
    for loop in record["loops"]:
        header = loop["header"]
        if "BLOCK_H" in header:
            out.append(tiles * k_steps)
        elif "BLOCK_V" in header:
            out.append(tiles)
        else:
            out.append(None)
    return out


def linear_logprobs_forward(record: dict, tokens: int, hidden: int, vocab: int, dtype_bytes: int) -> Work:
    case = _case(record, tokens=tokens, hidden=hidden, vocab=vocab)
    bn, bv, bh = (case["args"][k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H"))
    n_blocks, v_blocks = math.ceil(tokens / bn), math.ceil(vocab / bv)
    programs = math.prod(case["grid"])
    splits = case["args"]["splits"]
    resident = _resident(record, programs)
    weight = vocab * hidden * dtype_bytes
    # The splits of a token block run side by side (the split is the fastest program index), so
    # a wave holds all splits of resident / splits token blocks: the weight streams from HBM
    # once per wave. Each program re-reads its token block's X for every vocab tile: X comes
    # from HBM once if the running blocks' X fits in 3/4 of L2 (the rest holds the weight
    # stream), else once per vocab tile of a split. Outputs: [splits, N] partials, the target logit.
    x_bytes = tokens * hidden * dtype_bytes
    running_x = min(n_blocks, math.ceil(resident / splits)) * bn * hidden * dtype_bytes
    x_hbm = x_bytes if running_x <= 0.75 * H100.l2_bytes else x_bytes * math.ceil(v_blocks / splits)
    hbm = x_hbm + weight * math.ceil(programs / resident) + 4 * tokens * (splits + 1)
    l2 = n_blocks * v_blocks * (bn + bv) * hidden * dtype_bytes
    flops = 2.0 * n_blocks * bn * v_blocks * bv * hidden
    instructions, unmodelled = _issue(record, _gemm_loops(record, n_blocks * v_blocks, math.ceil(hidden / bh)), programs)
    k_loop = next((lp for lp in record["loops"] if "BLOCK_H" in lp["header"]), None)
    in_flight = resident * _loop_bytes(k_loop, record["num_warps"]) * max(record["num_stages"] - 1, 1) if k_loop else 0
    return Work(record["kernel"], programs, resident, hbm, l2, flops, instructions, in_flight, unmodelled)


def linear_logprobs_backward(record: dict, tokens: int, hidden: int, vocab: int, dtype_bytes: int,
                             weight_grad: bool, live: float = 1.0, recompute_all: bool = False,
                             mode: str | None = None, block_v: int | None = None) -> Work:
    """The fast backward: per (token block, vocab block) tile a recompute GEMM over H, then dX
    (and dW) GEMMs whose fp32 partials go to L2 as relaxed reductions.

    ``live``: the fraction of tiles that survive gradient filtering (1: unfiltered; a property
    of the model and data, not of the kernel). Dead tiles cost nothing when the forward decided
    (this kernel: one byte loaded, then exit; the launch of a dead CTA is not modelled, at most
    ~0.1 ms for 16000 CTAs at ~1 us per CTA per SM); ``recompute_all``: Cut Cross-Entropy's
    scheme, where every tile is recomputed and only then filtered. ``mode``: the build case
    ("filtered", "filtered frozen"); ``block_v``: model another vocab tile with this build's
    instruction counts (for the scheme comparison at CCE's 128-wide tiles)."""
    shape = dict(mode=mode) if mode else dict(weight_grad=weight_grad)
    case = _case(record, tokens=tokens, hidden=hidden, vocab=vocab, **shape)
    bn, bv, bh, group = (case["args"][k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H", "GROUP_N"))
    bv = block_v or bv
    n_blocks, v_blocks = math.ceil(tokens / bn), math.ceil(vocab / bv)
    programs = n_blocks * v_blocks
    resident = _resident(record, programs)
    live_tiles = live * programs
    recomputed = programs if recompute_all else live_tiles
    weight, hid = vocab * hidden * dtype_bytes, tokens * hidden * dtype_bytes
    grad_w, grad_h = vocab * hidden * 4, tokens * hidden * 4
    groups = math.ceil(n_blocks / group)  # each group of token blocks sweeps the whole vocabulary
    sweeps = groups if weight > H100.l2_bytes else 1
    # A group's sweep touches a vocab tile's W (and its dW rows) only if one of the group's
    # tiles there is live: 1 - (1 - live)^group, taking tiles to be live independently (real
    # liveness is correlated, frequent tokens' tiles live everywhere, which touches fewer).
    touched = 1.0 - (1.0 - live) ** min(group, n_blocks)
    hbm = hid + weight * sweeps * (1.0 if recompute_all else touched)
    hbm += 2 * grad_h  # grad_hidden: one read + one write back (a group's rows stay in L2)
    if weight_grad:
        hbm += 2 * grad_w * (groups if grad_w > H100.l2_bytes else 1) * touched  # read-modify-write per sweep
    recompute_bytes = (bn + bv) * hidden * dtype_bytes
    grad_bytes = bv * hidden * dtype_bytes + bn * hidden * 4  # W again, dX partials
    if weight_grad:
        grad_bytes += bn * hidden * dtype_bytes + bv * hidden * 4  # X again, dW partials
    l2 = recomputed * recompute_bytes + live_tiles * grad_bytes
    flops = 2.0 * bn * bv * hidden * (recomputed + live_tiles * (1 + int(weight_grad)))
    k_steps = math.ceil(hidden / bh)
    iterations = []
    for loop in record["loops"]:
        if "BLOCK_H" not in loop["header"]:
            iterations.append(None)
        elif loop["function"] == "logit_tile":
            iterations.append(recomputed * k_steps)
        else:
            iterations.append(live_tiles * k_steps)
    instructions, unmodelled = _issue(record, iterations, programs)
    k_loop = next((lp for lp in record["loops"] if "BLOCK_H" in lp["header"]), None)
    in_flight = resident * _loop_bytes(k_loop, record["num_warps"]) * max(record["num_stages"] - 1, 1) if k_loop else 0
    return Work(record["kernel"], programs, resident, hbm, l2, flops, instructions, in_flight, unmodelled)


def expected_blocks(rows: int, live: float, block_n: int) -> float:
    """E[ceil(K / block_n)] for K ~ Binomial(rows, live): the packed blocks of one (row group,
    vocab tile) segment when each row is live there independently with probability ``live``."""
    if live <= 0.0:
        return 0.0
    if live >= 1.0:
        return float(math.ceil(rows / block_n))
    log_p, log_q = math.log(live), math.log1p(-live)
    total = 0.0
    for k in range(1, rows + 1):
        log_pmf = math.lgamma(rows + 1) - math.lgamma(k + 1) - math.lgamma(rows - k + 1) + k * log_p + (rows - k) * log_q
        total += math.exp(log_pmf) * math.ceil(k / block_n)
    return total


def linear_logprobs_packed_backward(record: dict, tokens: int, hidden: int, vocab: int, dtype_bytes: int,
                                    weight_grad: bool, pair_live: float, group_rows: int,
                                    mode: str | None = None) -> Work:
    """The packed filtered backward (``kernels/linear_logprobs_pack.py``): per (row group, vocab
    tile) segment, dense blocks of the rows live there; one program per block.

    ``pair_live``: the fraction of (row, vocab tile) pairs that are live (each row independently;
    real data: 0.17-0.22 at 128-wide tiles on SmolLM2). Blocks per segment: E[ceil(K / BLOCK_N)],
    K ~ Binomial(group rows, pair_live) (the padding of each segment's last block counted). Per
    block L2 carries the vocab tile's W twice (recompute, dX) and, with the weight gradient, its
    fp32 dW partial; per live row (gathered through the row index: whole rows of H, so the same
    sectors as a dense tile) its X for the recompute (and again for dW) and its fp32 dX partial;
    masked slots load and add nothing. The tensor cores run full BLOCK_N-row tiles. HBM: a
    group's X and dX stay in L2 (``group_rows_for_l2``), so X is read once and dX read + written
    once; W (and dW, read-modify-written) sweep once per group, where a segment is non-empty."""
    shape = dict(mode=mode) if mode else dict(weight_grad=weight_grad)
    case = _case(record, tokens=tokens, hidden=hidden, vocab=vocab, **shape)
    bn, bv, bh = (case["args"][k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H"))
    v_blocks = math.ceil(vocab / bv)
    sizes = [group_rows] * (tokens // group_rows) + ([tokens % group_rows] if tokens % group_rows else [])
    blocks = v_blocks * sum(expected_blocks(rows, pair_live, bn) for rows in sizes)
    programs = max(1, round(blocks))
    resident = _resident(record, programs)
    pairs = pair_live * tokens * v_blocks
    weight, hid = vocab * hidden * dtype_bytes, tokens * hidden * dtype_bytes
    grad_w, grad_h = vocab * hidden * 4, tokens * hidden * 4
    touched = sum(1.0 - (1.0 - pair_live) ** rows for rows in sizes) / len(sizes)  # a segment has a live row
    sweeps = len(sizes) if weight > H100.l2_bytes else 1
    hbm = hid + 2 * grad_h + weight * sweeps * touched
    if weight_grad:
        hbm += 2 * grad_w * (len(sizes) if grad_w > H100.l2_bytes else 1) * touched
    l2 = blocks * 2 * bv * hidden * dtype_bytes + pairs * hidden * (dtype_bytes + 4) + blocks * bn * 4 * 3
    if weight_grad:
        l2 += pairs * hidden * dtype_bytes + blocks * bv * hidden * 4
    flops = 2.0 * bn * bv * hidden * blocks * (2 + int(weight_grad))
    k_steps = math.ceil(hidden / bh)
    iterations = [blocks * k_steps if "BLOCK_H" in loop["header"] else None for loop in record["loops"]]
    instructions, unmodelled = _issue(record, iterations, programs)
    k_loop = next((lp for lp in record["loops"] if "BLOCK_H" in lp["header"]), None)
    in_flight = resident * _loop_bytes(k_loop, record["num_warps"]) * max(record["num_stages"] - 1, 1) if k_loop else 0
    return Work(record["kernel"], programs, resident, hbm, l2, flops, instructions, in_flight, unmodelled)


# The row lists' build (torch ops between forward and backward, linear_logprobs_pack): ~12 launches
# and two host syncs (nonzero's size, the grid's block count), taken at the eager-launch cost.
PACKING_FIXED_S = 12 * 5e-6 + 2 * 20e-6


def linear_logprobs_packing(tokens: int, vocab: int, block_v: int, pair_live: float) -> Work:
    """Building the packed backward's row lists: the [tiles, N] bool verdicts written by
    ``live_rows`` and read ~4 times (the grad mask, nonzero's count and write passes, the
    per-segment counts), nonzero's int64 [L, 3] written and read (48 B per live pair) and the
    int32 row index written and read by the kernel (8 B); its launches and host syncs,
    ``PACKING_FIXED_S``, as a fixed cost."""
    verdicts = tokens * math.ceil(vocab / block_v)
    pairs = pair_live * verdicts
    moved = 5 * verdicts + 56 * pairs
    return Work("pack_live_rows", 1, 1, moved, moved, 0.0, 0.0, float("inf"), fixed_s=PACKING_FIXED_S)


def linear_logprobs_verdicts(tokens: int, vocab: int, block_v: int) -> Work:
    """The filtered forward's extra work: its [v_blocks, N] fp32 tile maxima written by the
    forward and read once by ``live_tiles`` (a few PyTorch elementwise launches)."""
    maxima = tokens * math.ceil(vocab / block_v) * 4
    return Work("live_tiles", 1, 1, 2 * maxima, 2 * maxima, 0.0, 0.0, float("inf"))


# -- paged decode ---------------------------------------------------------------------------

def paged_decode(record: dict, batch: int, context: int, q_heads: int, kv_heads: int, head_dim: int,
                 dtype_bytes: int) -> Work:
    case = _case(record, op="paged_decode", batch=batch, q_heads=q_heads, kv_heads=kv_heads, table_width=256)
    programs = math.prod(case["grid"])
    resident = _resident(record, programs)
    splits = case["args"]["NUM_SPLITS"]
    block_n, block_g = case["args"]["BLOCK_N"], case["args"]["BLOCK_G"]
    kv = batch * context * kv_heads * head_dim * dtype_bytes * 2
    io = 2 * batch * q_heads * head_dim * dtype_bytes + batch * math.ceil(context / 16) * 4
    partials = batch * q_heads * splits * (head_dim + 1) * 4 if splits > 1 else 0
    tiles = batch * kv_heads * math.ceil(context / block_n)
    iterations = [tiles if lp["step"] == block_n else None for lp in record["loops"]]
    instructions, unmodelled = _issue(record, iterations, programs)
    hot = record["loops"][0] if record["loops"] else None
    in_flight = resident * _loop_bytes(hot, record["num_warps"]) if hot else 0
    flops = 4.0 * block_g * head_dim * context * batch * kv_heads  # executed: the q group padded to BLOCK_G rows
    return Work(record["kernel"], programs, resident, kv + io + partials,
                kv + io + partials + batch * kv_heads * context * 4, flops, instructions, in_flight, unmodelled)


def decode_reduce(record: dict, batch: int, q_heads: int, head_dim: int, splits: int) -> Work:
    programs = batch * q_heads
    resident = _resident(record, programs)
    partials = batch * q_heads * splits * (head_dim + 1) * 4
    instructions, unmodelled = _issue(record, [None] * len(record["loops"]), programs)
    return Work(record["kernel"], programs, resident, partials, partials, 0.0, instructions,
                resident * splits * head_dim * 4, unmodelled)
