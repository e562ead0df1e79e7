"""pytest-benchmark for mix_sample vs the plain PyTorch baseline (bench/mix_sample.py).
GPU: the Triton kernel on bf16 [64, 152064]; CPU: the PyTorch path on [8, 32000]
(interpreter timings are not performance, so the kernel itself is GPU-only here).

    python -m pytest bench/test_bench_mix_sample.py --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch
from _timing import synced
from mix_sample import baseline_mix_sample  # bench/mix_sample.py

from judgefree.kernels.mix_sample import mix_sample

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
BATCH, VOCAB, DTYPE = (64, 152064, torch.bfloat16) if ON_GPU else (8, 32000, torch.float32)


def _inputs():
    gen = torch.Generator().manual_seed(0)
    c = (torch.randn(BATCH, VOCAB, generator=gen) * 3).to(DEVICE, DTYPE)
    u = (torch.randn(BATCH, VOCAB, generator=gen) * 3).to(DEVICE, DTYPE)
    return c, u, torch.rand(BATCH, generator=gen).to(DEVICE)




@pytest.mark.parametrize("top_p", [0.9, 1.0])
@pytest.mark.parametrize("impl", ["ours", "baseline"])
def test_bench_mix_sample(benchmark, impl, top_p):
    c, u, h = _inputs()
    seeds = torch.arange(BATCH, device=DEVICE)
    if impl == "ours":
        fn = lambda: mix_sample(c, u, h, seeds=seeds, step=0, top_p=top_p, validate=False)  # noqa: E731
    else:
        fn = lambda: baseline_mix_sample(c, u, h, top_p)  # noqa: E731
    tokens = benchmark(synced(fn))[0]
    assert tokens.shape == (BATCH,) and (tokens >= 0).all() and (tokens < VOCAB).all()
