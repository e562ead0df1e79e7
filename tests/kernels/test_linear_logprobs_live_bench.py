"""bench/linear_logprobs_live.py's measurement against the kernel it describes.

References: the Triton forward's own verdicts (``live_tiles`` on the kernel's tile maxima) for
the live fractions, and the Triton backward run with and without ``filter_eps`` for the dropped
gradient (both under the interpreter at the GPU's 128 x 128 / 128 x 256 tiles, small H).
Tolerance: float32 rounding of the gradients (1e-4 of the largest dropped magnitude).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

from judgefree.kernels.linear_logprobs_filter import live_tiles
from judgefree.kernels.linear_logprobs_triton import KernelConfig, forward_lse, linear_logprobs_triton

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench():
    sys.path.insert(0, str(BENCH))  # the bench imports its sibling _timing
    try:
        spec = importlib.util.spec_from_file_location("bench_linear_logprobs_live", BENCH / "linear_logprobs_live.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_live_fractions_and_dropped_gradient_match_the_kernel(fresh_seed):
    live_bench = _bench()
    gen = torch.Generator().manual_seed(fresh_seed)
    n, h, v, eps = 300, 64, 700, 1e-2  # 3 row tiles (the last ragged), 6 vocab tiles (the last ragged)
    weight = torch.randn(v, h, generator=gen)
    weight /= weight.norm(dim=1, keepdim=True)
    targets = torch.randint(0, v, (n,), generator=gen)
    targets[100:] = torch.randint(0, 128, (200,), generator=gen)  # the later rows' targets: vocab tile 0
    # p(target) ~0.9 with every other p < eps: those rows keep only their target's tile live ...
    hidden = 10.0 * weight[targets] + 0.1 * torch.randn(n, h, generator=gen)
    hidden[:100] = torch.randn(100, h, generator=gen)  # ... the first row tile has flat rows: all live
    grad = torch.where(torch.arange(n) < 150, -0.05, 0.05).double()  # DPO at margin 0: chosen, then rejected

    (m,) = live_bench.measure(hidden, weight, targets, grad, [eps], eps)

    # The bench measures the tile filter's drop (whole dead tiles): compare with that backward.
    config = KernelConfig(block_n=128, block_v=128, block_h=64, vocab_splits=2, frozen_block_v=256, frozen_block_h=64,
                          filter_packed=False)
    tile_max = torch.empty(6, n)
    lse, target_logit = forward_lse(hidden, weight, targets, config, tile_max=tile_max)
    valid = torch.ones(n, dtype=torch.bool)
    kernel_live = live_tiles(tile_max, lse, target_logit - lse, targets, valid, 128, 128, eps)
    kernel_frozen = live_tiles(tile_max, lse, target_logit - lse, targets, valid, 128, 128, eps, 256)
    assert 0.0 < m["live"] < 1.0 and 0.0 < m["live_frozen"] < 1.0  # the case has dead and live tiles
    assert math.isclose(m["live"], float(kernel_live.double().mean()))
    assert math.isclose(m["live_frozen"], float(kernel_frozen.double().mean()))

    def grads(filter_eps, train_weight=True):
        x, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_(train_weight)
        linear_logprobs_triton(x, w, targets, -100, config, filter_eps=filter_eps).backward(grad.float())
        return x.grad, w.grad

    (exact_h, exact_w), (kept_h, kept_w) = grads(None), grads(eps)
    frozen_h, _ = grads(eps, train_weight=False)
    for key, dropped, exact in (("err_h", exact_h - kept_h, exact_h), ("err_w", exact_w - kept_w, exact_w),
                                ("err_h_frozen", exact_h - frozen_h, exact_h)):
        measured = m[key] * float(exact.abs().max())
        assert measured > 0
        assert math.isclose(measured, float(dropped.abs().max()), rel_tol=1e-3, abs_tol=1e-4 * measured), key
    assert m["within"] and m["err_h"] <= m["bound_h"] and m["err_w"] <= m["bound_w"]
    # Packing live rows per vocab tile never needs more tiles than today's layout, nor fewer than the live pairs.
    assert m["rows_live"][1] <= m["compacted"] <= m["live"]
