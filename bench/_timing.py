"""Timing helpers shared by the benchmark scripts (bench/ is on sys.path when they run).

GPU numbers are medians of CUDA-graph replays (launch overhead excluded, as the engine runs
decode under CUDA graphs); CPU numbers are wall-clock medians and only mean something as
ratios against a baseline timed in the same run.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from judgefree.io import write_atomic  # noqa: F401  (the scripts import it from here)


def time_us(fn, device: torch.device, repeats: int = 20) -> float:
    """Median microseconds per call: CUDA-graph replays on a GPU, wall clock on the CPU."""
    if device.type != "cuda":
        fn()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) * 1e6
    calls = 20
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(samples)


def copy_bandwidth_gbs(device: torch.device, size_mib: int) -> float:
    """Measured device copy bandwidth (bytes read + written per second)."""
    src = torch.empty(size_mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / (time_us(lambda: dst.copy_(src), device, repeats=10) * 1e-6) / 1e9


def synced(fn):
    """``fn`` followed by a device sync, so that pytest-benchmark times finished GPU work."""
    def call():
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out
    return call


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"


# -- fair wall-clock comparisons (methods interleaved, several rounds) -----------------------

def load_average() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages (zeros where the OS has none)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (0.0, 0.0, 0.0)


def interleaved(methods: dict, rounds: int = 3, sync=None) -> tuple[dict, dict]:
    """Time every method once per round, the order rotated each round, so that a change in
    machine load falls on all methods alike. Returns ({name: [seconds per round]},
    {name: the last round's result}). ``sync`` (e.g. torch.cuda.synchronize) brackets each run."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(methods)
    samples: dict = {name: [] for name in names}
    results: dict = {}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if sync:
                sync()
            start = time.perf_counter()
            results[name] = methods[name]()
            if sync:
                sync()
            samples[name].append(time.perf_counter() - start)
    return samples, results


def spread(seconds: list) -> tuple[float, float, float]:
    """(median, min, max) of a list of timings."""
    return statistics.median(seconds), min(seconds), max(seconds)


def load_line(before: tuple, after: tuple) -> str:
    """One line for a results file: the load around the timings, and whether it was loaded
    (1-minute load above half the cores: other work shared the CPU)."""
    cores = os.cpu_count() or 1
    loaded = max(before[0], after[0]) > cores / 2
    return (f"load average (1/5/15 min) before {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f}, "
            f"after {after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} on {cores} cores: "
            + ("LOADED, other work shared the machine; read ratios, not absolute times" if loaded else "quiet"))
