"""pytest-benchmark: linear_logprobs fwd+bwd (CPU path) against the eager formula at the
issue's shape N=4096, H=576, V=49152, float32. Peak tensor memory (profiler replay, see
bench/linear_logprobs.py) goes into each result's extra_info.

    .venv/bin/python -m pytest bench/test_bench_linear_logprobs.py --benchmark-enable
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("bench_linear_logprobs", Path(__file__).with_name("linear_logprobs.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

N, H, V = 4096, 576, 49152


@pytest.fixture(scope="module")
def case():
    return bench.make_case(N, H, V, torch.float32, "cpu")


@pytest.mark.parametrize("method", ["eager", "ours (torch chunks)"])
def test_linear_logprobs_fwd_bwd_cpu(benchmark, case, method):
    fn = bench.methods("cpu")[method]
    benchmark.group = f"linear_logprobs fwd+bwd N={N} H={H} V={V} float32"
    benchmark.extra_info["peak_tensor_mib"] = bench.cpu_peak_tensor_bytes(case, fn) / 2**20
    out = benchmark.pedantic(case.step, args=(fn,), rounds=3, warmup_rounds=1, iterations=1)
    assert torch.isfinite(out).all() and torch.isfinite(case.weight.grad).all()
