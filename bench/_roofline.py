"""An analytic roofline for the kernels at their target shapes: a model, not a measurement.

For each launch it counts the bytes that must come from HBM, the bytes that pass through L2,
the FLOPs, and the warp-instructions (from the SASS counts of the compiled build: each
loop's static instruction count times its iterations at the shape), and turns each into a
lower bound on time on an H100 and an H200. A kernel cannot be faster than the largest of
them. The assumptions are the constants below and the per-op traffic formulas; every one of
them is printed with the table (``assumptions()``).
"""

from __future__ import annotations

import math
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
        f"mix_sample: {SEARCH_PASSES} threshold-search passes with top-p, none without; top-k off.",
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
            "launch": gpu.launch,  # fixed, added to the launch's largest time (not a competing bound)
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

def mix_sample(stats: dict, record: dict, batch: int, vocab: int, dtype_bytes: int, paths: int, top_p: bool,
               chunk: int = 2048, contrast: bool = False) -> list[Work]:
    """Two launches: the chunk statistics (one program per (row, chunk), straight-line code,
    every logit read once) and the per-row kernel. Without filters the latter reads the row's
    partials and one chunk; with top-p it runs SEARCH_PASSES search passes and the draw pass
    over the whole row (re-reads: L2 hits when the batch's logits fit in L2)."""
    row_bytes = vocab * dtype_bytes * paths
    chunks = math.ceil(vocab / chunk)
    programs = batch * chunks
    resident = _resident(stats, programs)
    stats_instructions, stats_unmodelled = _issue(stats, [None] * len(stats["loops"]), programs)
    # no loop: every program issues its chunk's loads up front (16 tokens x paths per thread)
    launch_stats = Work(stats["kernel"], programs, resident, batch * row_bytes + programs * 7 * 4,
                        batch * row_bytes, 0.0, stats_instructions, resident * chunk * dtype_bytes * paths,
                        stats_unmodelled)
    passes = (SEARCH_PASSES + 1 + int(contrast)) if top_p or contrast else 0
    resident_rows = _resident(record, batch)
    rereads = batch * row_bytes * passes
    hbm = (rereads if batch * row_bytes > H100.l2_bytes else 0.0) + batch * chunks * 7 * 4
    if not passes:
        hbm += batch * chunk * dtype_bytes * paths  # the drawn chunk (just read by launch 1: counted anyway)
    # The search is inlined once per call (top-k, then top-p): its loops come in call order. The
    # call is named by the inlined-at line where the compiler gives one (Triton 3.8), else the
    # last call is taken to be top-p's (source order).
    search = [i for i, lp in enumerate(record["loops"]) if lp["function"] == "_threshold_search"]
    named = [i for i in search if "top_p" in (record["loops"][i]["call_line"] or "")]
    top_p_loops = set(named) if any(record["loops"][i]["call_line"] for i in search) else set(search[len(search) // 2:])
    iterations = []
    for i, loop in enumerate(record["loops"]):
        per_row = 1 if loop["step"] is None else math.ceil(vocab / loop["step"])
        if loop["function"] == "_threshold_search":
            iterations.append(batch * SEARCH_PASSES * per_row if top_p and i in top_p_loops else 0)
        elif loop["step"]:  # the contrast pass and the full draw: only rows with a filter, greedy or contrast
            iterations.append(batch * per_row if passes else 0)
        else:
            iterations.append(None)
    instructions, unmodelled = _issue(record, iterations, batch)
    hot = max(record["loops"], key=lambda lp: _loop_bytes(lp, record["num_warps"]), default=None)
    in_flight = resident_rows * (_loop_bytes(hot, record["num_warps"]) if hot else 0)
    if not passes:  # one straight-line chunk read per row
        in_flight = resident_rows * chunk * dtype_bytes * paths
    launch_row = Work(record["kernel"], batch, resident_rows, hbm, rereads + batch * chunk * dtype_bytes * paths,
                      0.0, instructions, in_flight, unmodelled)
    return [launch_stats, launch_row]


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
                             weight_grad: bool) -> Work:
    case = _case(record, tokens=tokens, hidden=hidden, vocab=vocab, weight_grad=weight_grad)
    bn, bv, bh, group = (case["args"][k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H", "GROUP_N"))
    n_blocks, v_blocks = math.ceil(tokens / bn), math.ceil(vocab / bv)
    programs = n_blocks * v_blocks
    resident = _resident(record, programs)
    weight, hid = vocab * hidden * dtype_bytes, tokens * hidden * dtype_bytes
    grad_w, grad_h = vocab * hidden * 4, tokens * hidden * 4
    groups = math.ceil(n_blocks / group)  # each group of token blocks sweeps the whole vocabulary
    sweeps = groups if weight > H100.l2_bytes else 1
    hbm = hid + weight * sweeps + 2 * grad_h  # grad_hidden: one read + one write back (a group's rows stay in L2)
    if weight_grad:
        hbm += 2 * grad_w * (groups if grad_w > H100.l2_bytes else 1)  # read-modify-write per sweep
    per_tile = (bn + bv) * hidden * dtype_bytes + bv * hidden * dtype_bytes + bn * hidden * 4
    if weight_grad:
        per_tile += bn * hidden * dtype_bytes + bv * hidden * 4
    flops = 2.0 * bn * bv * hidden * programs * (2 + int(weight_grad))
    instructions, unmodelled = _issue(record, _gemm_loops(record, programs, math.ceil(hidden / bh)), programs)
    k_loop = next((lp for lp in record["loops"] if "BLOCK_H" in lp["header"]), None)
    in_flight = resident * _loop_bytes(k_loop, record["num_warps"]) * max(record["num_stages"] - 1, 1) if k_loop else 0
    return Work(record["kernel"], programs, resident, hbm, programs * per_tile, flops, instructions, in_flight,
                unmodelled)


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
