"""Time and peak memory of per-token log-probs fwd+bwd: linear_logprobs against the eager
formula (and, on a GPU, liger-kernel's fused linear cross-entropy and Cut Cross-Entropy).

    python bench/linear_logprobs.py                 # CPU: N=4096, H=576, V=49152, float32
    python bench/linear_logprobs.py --device cuda   # GPU: N=8192, (H, V) = (4096, 32000) and (576, 49152), bf16
    python bench/linear_logprobs.py --device cuda --frozen-weight   # LoRA: the lm_head takes no gradient

Every method gets the same hidden [N, H], weight [V, H], targets and a random per-token
upstream gradient (what DPO's sequence sums pass back). Time: median (min-max) wall time of
one forward + backward after a warm-up, the methods interleaved in every round. Errors: the
largest absolute difference from eager of the values and of the hidden / weight gradients,
each over eager's largest magnitude (eager itself is the baseline, not the truth: in bf16 its
logits are rounded to bf16 before the log-softmax). Peak memory: the most bytes of tensors alive at once
during one forward + backward above what was alive before it (inputs excluded, gradients
included). On CUDA that is torch.cuda.max_memory_allocated. On the CPU the profiler records
every tensor allocation and free (profile_memory=True) and they are replayed in order; the
process's peak-RSS delta (VmHWM, reset through /proc/self/clear_refs) is printed beside it
as a cross-check that also counts allocator slack and library buffers.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from _timing import write_atomic  # bench/ is on sys.path when its scripts run

LogprobFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def eager(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The usual training-code formula: logits in the input dtype, log_softmax in float32."""
    logits = (hidden @ weight.T).float()
    return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)


def methods(device: str) -> dict[str, LogprobFn]:
    """Name -> per-token log-prob function; baselines that do not import are left out."""
    from judgefree.kernels.linear_logprobs import FILTER_EPS, linear_logprobs
    from judgefree.kernels.linear_logprobs_triton import default_config, linear_logprobs_triton

    found: dict[str, LogprobFn] = {"eager": eager}
    if device == "cuda":
        found["ours (triton)"] = lambda h, w, t: linear_logprobs(h, w, t, backend="triton")
        found["ours (triton, filter 2^-12, packed rows)"] = lambda h, w, t: linear_logprobs(
            h, w, t, backend="triton", filter_eps=FILTER_EPS)
        found["ours (triton, filter 2^-12, tile verdicts)"] = lambda h, w, t: linear_logprobs_triton(
            h, w, t, config=replace(default_config(h.shape[0], w.shape[0], h.shape[1]), filter_packed=False),
            filter_eps=FILTER_EPS)
        found["ours (triton, deterministic)"] = lambda h, w, t: linear_logprobs(
            h, w, t, backend="triton", deterministic=True)
        found["ours (torch chunks)"] = lambda h, w, t: linear_logprobs(h, w, t, backend="torch")
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            liger = LigerFusedLinearCrossEntropyLoss(reduction="none")
            found["liger FLCE"] = lambda h, w, t: -liger(w, h, t)
        except ImportError as error:
            print(f"liger-kernel not importable: {error}", file=sys.stderr)
        try:
            from cut_cross_entropy import linear_cross_entropy

            found["CCE (default filter)"] = lambda h, w, t: -linear_cross_entropy(h, w, t, reduction="none")
            found["CCE (no filter)"] = lambda h, w, t: -linear_cross_entropy(
                h, w, t, reduction="none", filter_eps=None)
        except ImportError as error:
            print(f"cut-cross-entropy not importable: {error}", file=sys.stderr)
    else:
        found["ours (torch chunks)"] = lambda h, w, t: linear_logprobs(h, w, t, backend="torch")
    return found


@dataclass(slots=True)
class Case:
    hidden: torch.Tensor
    weight: torch.Tensor
    targets: torch.Tensor
    grad_out: torch.Tensor

    def step(self, fn: LogprobFn) -> torch.Tensor:
        """One forward + backward; returns the detached log-probs."""
        self.hidden.grad = self.weight.grad = None
        out = fn(self.hidden, self.weight, self.targets)
        out.backward(self.grad_out)
        return out.detach()

    def results(self, fn: LogprobFn) -> tuple[torch.Tensor, ...]:
        """One step's log-probs and gradients (the weight's when it is trained)."""
        out = self.step(fn)
        grads = (self.hidden.grad.clone(),) + ((self.weight.grad.clone(),) if self.weight.requires_grad else ())
        return (out,) + grads


def relative_errors(results: tuple[torch.Tensor, ...], base: tuple[torch.Tensor, ...]) -> list[float]:
    """max |a - b| / max |b| per tensor (values, grad hidden, grad weight)."""
    return [float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-30))
            for a, b in zip(results, base)]


def make_case(n: int, h: int, v: int, dtype: torch.dtype, device: str, seed: int = 0,
              frozen_weight: bool = False, target_boost: float = 0.0, logit_scale: float = 1.0) -> Case:
    """``frozen_weight``: the lm_head takes no gradient (LoRA training). ``target_boost``:
    each row's target logit is raised by about that much over the others' N(0, 1) (a
    confident model, as on its own samples; 0: random logits, where filtering drops nothing).
    ``logit_scale``: the logits' standard deviation; at 6 each row keeps its own ~20-25 % of the
    128-wide vocab tiles at 2^-12 and every 128-row tile stays live, the regime measured on
    SmolLM2's own samples (17-22 % of pairs, 96-99.5 % of tiles), where only packing drops work."""
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen, device=device) * logit_scale
    weight = torch.randn(v, h, generator=gen, device=device) / h**0.5  # rows of norm ~1
    targets = torch.randint(0, v, (n,), generator=gen, device=device)
    hidden = (hidden + target_boost * weight[targets]).to(dtype).requires_grad_()
    weight = weight.to(dtype).requires_grad_(not frozen_weight)
    grad_out = torch.randn(n, generator=gen, device=device)
    return Case(hidden, weight, targets, grad_out)


def live_fraction(case: Case, filter_eps: float) -> tuple[float, float] | None:
    """The fractions of the Triton backward's tiles and of its (row, vocab tile) pairs that
    survive filtering at ``filter_eps`` on this case (its forward's verdicts); None off CUDA
    (unless under TRITON_INTERPRET=1)."""
    from judgefree.kernels._backend import triton_interpreting

    if case.hidden.device.type != "cuda" and not triton_interpreting():
        return None
    import triton

    from judgefree.kernels.linear_logprobs_filter import live_rows, tiles_of_rows
    from judgefree.kernels.linear_logprobs_triton import backward_tiles, default_config, forward_lse

    hidden, weight = case.hidden.detach(), case.weight.detach()
    config = default_config(hidden.shape[0], weight.shape[0], hidden.shape[1])
    tile_max = torch.empty(triton.cdiv(weight.shape[0], config.block_v), hidden.shape[0], device=hidden.device)
    lse, target_logit = forward_lse(hidden, weight, case.targets, config, tile_max=tile_max)
    valid = torch.ones_like(case.targets, dtype=torch.bool)
    bwd_block_v, _ = backward_tiles(config, case.weight.requires_grad, deterministic=False)
    pairs = live_rows(tile_max, lse, target_logit - lse, case.targets, valid, config.block_v, filter_eps, bwd_block_v)
    return float(tiles_of_rows(pairs, config.block_n).float().mean()), float(pairs.float().mean())


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_step(case: Case, fn: LogprobFn, device: str) -> float:
    """Seconds of one forward + backward."""
    _sync(device)
    start = time.perf_counter()
    case.step(fn)
    _sync(device)
    return time.perf_counter() - start


def cuda_peak_bytes(case: Case, fn: LogprobFn) -> int:
    case.hidden.grad = case.weight.grad = None
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    case.step(fn)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def cpu_peak_tensor_bytes(case: Case, fn: LogprobFn) -> int:
    """Peak of live tensor bytes, replaying the profiler's CPU allocation events in order."""
    from torch.profiler import ProfilerActivity, profile

    case.hidden.grad = case.weight.grad = None
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        case.step(fn)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):  # sorted() is stable: ties keep order
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS growth means new memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_peak_rss_bytes(case: Case, fn: LogprobFn) -> int | None:
    """Peak resident-set growth of this process during one step (None where unsupported)."""

    def read_kib(field: str) -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))

    case.hidden.grad = case.weight.grad = None
    gc.collect()
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    base = read_kib("VmRSS:")
    case.step(fn)
    return (read_kib("VmHWM:") - base) * 1024


def run(args: argparse.Namespace) -> str:
    """Measure every method for every vocab size; return the markdown table."""
    dtype = getattr(torch, args.dtype)
    load = f", load average at start {os.getloadavg()[0]:.1f}"
    boost = f", target logit boosted by {args.target_boost:g} (a confident model)" if args.target_boost else ""
    boost += f", logit std {args.logit_scale:g}" if args.logit_scale != 1.0 else ""
    lines = [
        f"linear_logprobs fwd+bwd{' (frozen lm_head: LoRA)' if args.frozen_weight else ''}, "
        f"N={args.n}, {args.dtype}{boost}, device: {describe(args.device)}{load}, "
        f"median of {args.repeats} (methods interleaved)",
        "",
        "| H | V | method | time (s), median (min-max) | eager time / time | peak memory (MiB) | eager memory / memory |"
        + (" peak RSS delta (MiB) |" if args.device == "cpu" else "") + " rel. error vs eager: values, dX, dW |",
        "|---|---|---|---|---|---|---|" + ("---|" if args.device == "cpu" else "") + "---|",
    ]
    mib = 1 / 2**20
    for hidden_size, vocab in args.shapes:
        case = make_case(args.n, hidden_size, vocab, dtype, args.device, frozen_weight=args.frozen_weight,
                         target_boost=args.target_boost, logit_scale=args.logit_scale)
        fns = methods(args.device)
        from judgefree.kernels.linear_logprobs import FILTER_EPS

        live = live_fraction(case, FILTER_EPS)
        if live is not None:
            lines.append(f"| {hidden_size} | {vocab} | (under filter 2^-12: backward tiles live {live[0]:.1%}, "
                         f"(row, tile) pairs live {live[1]:.1%}) | | | | | |")
        outs, peaks, rss = {}, {}, {}
        for name, fn in fns.items():
            try:
                outs[name] = case.results(fn)  # also the first warm-up step
                for _ in range(args.warmup - 1):
                    case.step(fn)
                if args.device == "cuda":
                    peaks[name] = cuda_peak_bytes(case, fn)
                else:
                    peaks[name], rss[name] = cpu_peak_tensor_bytes(case, fn), cpu_peak_rss_bytes(case, fn)
            except Exception as error:  # noqa: BLE001 - one failing baseline must not end the table
                outs.pop(name, None)
                reason = "out of memory" if isinstance(error, torch.OutOfMemoryError) else repr(error)[:120]
                lines.append(f"| {hidden_size} | {vocab} | {name} | failed: {reason} | | | | |")
                print(lines[-1], flush=True)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
        if not outs:
            continue
        # Repeats interleave the methods, so background load falls on all of them alike.
        times = {name: [] for name in outs}
        for _ in range(args.repeats):
            for name in outs:
                times[name].append(timed_step(case, fns[name], args.device))
        base = next(iter(outs))
        if base != "eager":
            lines.append(f"| {hidden_size} | {vocab} | (eager failed: ratios below are against {base}) | | | | | |")
        base_time, base_mem = statistics.median(times[base]), peaks[base]
        for name, results in outs.items():
            seconds = statistics.median(times[name])
            errors = ", ".join(f"{e:.1e}" for e in relative_errors(results, outs[base]))
            row = (f"| {hidden_size} | {vocab} | {name} | {seconds * 1e3:.2f} ms ({min(times[name]) * 1e3:.2f}-"
                   f"{max(times[name]) * 1e3:.2f}) | {base_time / seconds:.2f}x | {peaks[name] * mib:.0f} | "
                   f"{base_mem / max(peaks[name], 1):.1f}x |")
            if args.device == "cpu":
                row += f" {rss[name] * mib:.0f} |" if rss[name] is not None else " n/a |"
            lines.append(row + f" {errors} |")
            print(lines[-1], flush=True)
        del case
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return "\n".join(lines) + "\n"


def describe(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--n", type=int, default=None, help="tokens (default 4096 CPU, 8192 GPU)")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="H:V",
                        help="hidden:vocab pairs (default 576:49152 CPU; 4096:32000 576:49152 GPU)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--frozen-weight", action="store_true",
                        help="the lm_head takes no gradient, as in LoRA training")
    parser.add_argument("--target-boost", type=float, default=0.0,
                        help="raise each target logit by about this much (a confident model; default 0: random)")
    parser.add_argument("--logit-scale", type=float, default=1.0,
                        help="the logits' std (6: rows keep different ~20%% of the vocab tiles, as real DPO data)")
    parser.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    args.n = args.n or (8192 if gpu else 4096)
    try:
        args.shapes = [tuple(int(x) for x in shape.split(":")) for shape in
                       (args.shapes or (["4096:32000", "576:49152"] if gpu else ["576:49152"]))]
    except ValueError:
        raise SystemExit(f"--shapes takes H:V pairs of integers, got {args.shapes}") from None
    if any(len(shape) != 2 or min(shape) < 1 for shape in args.shapes):
        raise SystemExit(f"--shapes takes H:V pairs of positive integers, got {args.shapes}")
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    args.repeats = args.repeats or (10 if gpu else 3)
    table = run(args)
    table += f"\nload average at end {os.getloadavg()[0]:.1f} (the machine's cores may be shared)\n"
    print()
    print(table)
    if args.out:
        write_atomic(args.out, table)


if __name__ == "__main__":
    main()
