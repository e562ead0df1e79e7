"""linear_logprobs' Triton modes: deterministic (no atomics), gradient filtering, split choice.

References: the float64 eager formula ``linear_logprobs_eager`` for values and gradients
(tolerance 1e-4 of the values' scale in float32, 2e-2 for bf16); the deterministic mode is
compared bit for bit with itself across runs and split counts; the filtered gradients against
the unfiltered ones within the bound documented in ``linear_logprobs`` (computed here from the
float64 softmax).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from judgefree.kernels.linear_logprobs import linear_logprobs
from judgefree.kernels.linear_logprobs_ref import linear_logprobs_eager
from judgefree.kernels.linear_logprobs_triton import (
    GPU_CONFIG,
    KernelConfig,
    backward_grads,
    forward_lse,
    linear_logprobs_triton,
    wave_splits,
)
from judgefree.testing.grads import run_with_grads as _run

IGNORE = -100


def _inputs(n, h, v, *, seed, dtype=torch.float32, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=gen) * scale).to(dtype)
    weight = (torch.randn(v, h, generator=gen) / h**0.5 * 3).to(dtype)
    targets = torch.randint(0, v, (n,), generator=gen)
    targets[torch.randperm(n, generator=gen)[:2]] = IGNORE
    targets[-1] = v - 1  # inside the ragged last vocab tile
    grad_out = torch.randn(n, generator=gen)
    return hidden, weight, targets, grad_out


def _close(actual, expected, rel):
    scale = expected.abs().max().clamp(min=1.0)
    torch.testing.assert_close(actual.double(), expected.double(), atol=rel * float(scale), rtol=rel)


def _config(vocab_splits, token_splits):
    # Small tiles: several hidden blocks, 8 vocab blocks (the last ragged), 3 token blocks.
    return KernelConfig(block_n=16, block_v=128, block_h=32, vocab_splits=vocab_splits, token_splits=token_splits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic_is_bit_identical_across_runs_and_split_counts(dtype, fresh_seed):
    hidden, weight, targets, grad_out = _inputs(37, 67, 1000, seed=fresh_seed, dtype=dtype)
    results = []
    for vocab_splits, token_splits in ((1, 1), (3, 2), (3, 2)):  # the last one twice: two runs
        fn = lambda h, w, t: linear_logprobs_triton(  # noqa: E731
            h, w, t, IGNORE, _config(vocab_splits, token_splits), deterministic=True)
        results.append(_run(fn, hidden, weight, targets, grad_out))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
    truth = _run(lambda h, w, t: linear_logprobs_eager(h, w, t, IGNORE),
                 hidden.double(), weight.double(), targets, grad_out)
    rel = 1e-4 if dtype == torch.float32 else 2e-2
    _close(results[0][0], truth[0], 1e-4)
    _close(results[0][1], truth[1], rel)
    _close(results[0][2], truth[2], rel)
    assert torch.all(results[0][1][targets == IGNORE] == 0)


def test_deterministic_frozen_weight_and_extreme_logits(fresh_seed):
    # Logits in the thousands (one-hot softmax) and a frozen lm_head: no weight gradient.
    hidden, weight, targets, grad_out = _inputs(23, 40, 333, seed=fresh_seed, scale=400.0)
    fn = lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, _config(2, 2), deterministic=True)  # noqa: E731
    out, g_hidden, g_weight = _run(fn, hidden, weight, targets, grad_out, train_weight=False)
    ref, r_hidden, _ = _run(lambda h, w, t: linear_logprobs_eager(h, w, t, IGNORE),
                            hidden.double(), weight.double(), targets, grad_out, train_weight=False)
    assert g_weight is None and torch.isfinite(g_hidden).all()
    _close(out, ref, 1e-5)
    _close(g_hidden, r_hidden, 1e-4)


def test_frozen_weight_gets_no_weight_buffer(fresh_seed):
    hidden, weight, targets, grad_out = _inputs(20, 32, 300, seed=fresh_seed)
    safe = torch.where(targets == IGNORE, 0, targets)
    config = _config(1, 1)
    lse, _ = forward_lse(hidden, weight, safe, config)
    grad = torch.where(targets == IGNORE, 0.0, grad_out)
    g_hidden, g_weight = backward_grads(hidden, weight, safe, lse, grad, config, True, False)
    assert g_weight is None
    _, r_hidden, _ = _run(lambda h, w, t: linear_logprobs_eager(h, w, t, IGNORE),
                          hidden.double(), weight.double(), targets, grad_out, train_weight=False)
    _close(g_hidden, r_hidden, 1e-4)


def _filter_bounds(hidden, weight, targets, grad_out, eps, p_err=1e-5):
    """The documented bound of the dropped gradient, from the float64 softmax: every entry
    with |onehot - p| < eps may be dropped, nothing else. The kernel decides on its float32 p,
    which is within ``p_err`` of the float64 one here (logits up to ~60, exp's relative error
    ~1e-7 times the logit), so entries are widened by it."""
    valid = targets != IGNORE
    logits = hidden.double() @ weight.double().T
    delta = torch.nn.functional.one_hot(torch.where(valid, targets, 0), weight.shape[0]).double() \
        - torch.softmax(logits, dim=1)
    g = torch.where(valid, grad_out.double(), 0.0)
    small = torch.where(delta.abs() < eps + p_err, delta.abs() + p_err, 0.0) * g.abs()[:, None]  # [N, V]
    bound_hidden = small.sum(1)[:, None] * weight.double().abs().amax(0)[None, :]
    bound_weight = small.T @ hidden.double().abs()
    return bound_hidden, bound_weight, delta, g


@pytest.mark.parametrize("deterministic", [False, True])
def test_filtered_gradients_stay_within_the_documented_bound(deterministic, fresh_seed):
    # A confident model: most targets are the argmax with p ~ 1, so most tiles are negligible.
    hidden, weight, targets, grad_out = _inputs(48, 40, 700, seed=fresh_seed, scale=0.1)
    hidden += 6.0 * weight[torch.where(targets == IGNORE, 0, targets)]  # each row points at its target
    targets[5] = (targets[5] + 350) % 700 if targets[5] != IGNORE else 3  # one unlikely target: kept
    eps = 1e-3
    config = KernelConfig(block_n=16, block_v=128, block_h=64, vocab_splits=2, token_splits=2)
    exact = _run(lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, config, deterministic=deterministic),
                 hidden, weight, targets, grad_out)
    filtered = _run(lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, config, deterministic=deterministic,
                                                           filter_eps=eps),
                    hidden, weight, targets, grad_out)
    bound_hidden, bound_weight, delta, g = _filter_bounds(hidden, weight, targets, grad_out, eps)
    # The filter has something to drop (tiles whose rows with gradient are all below eps) ...
    tiles = (delta.abs() * (g != 0)[:, None]).reshape(3, 16, -1)
    tiles = torch.nn.functional.pad(tiles, (0, 768 - 700)).reshape(3, 16, 6, 128).amax(dim=(1, 3))
    assert int((tiles < eps).sum()) >= 9
    assert not torch.equal(filtered[2], exact[2])
    # ... the values are untouched and the gradients move by no more than the bound.
    assert torch.equal(filtered[0], exact[0])
    slack = 1e-6 * max(1.0, float(exact[1].abs().max()))  # float32 rounding of the exact path
    assert torch.all((filtered[1] - exact[1]).double().abs() <= bound_hidden + slack)
    slack = 1e-6 * max(1.0, float(exact[2].abs().max()))
    assert torch.all((filtered[2] - exact[2]).double().abs() <= bound_weight + slack)


def test_deterministic_filtered_is_bit_identical_across_runs_and_split_counts(fresh_seed):
    """Filtering under ``deterministic=True``: the forward's verdicts come from its one split per
    vocab block, so the dropped tiles, and with them the gradients, do not depend on the split
    counts either; the filter has tiles to drop here and the result stays within its bound."""
    hidden, weight, targets, grad_out = _inputs(45, 40, 700, seed=fresh_seed, scale=0.1)
    hidden += 6.0 * weight[torch.where(targets == IGNORE, 0, targets)]  # confident rows: dead tiles
    targets[7] = (targets[7] + 350) % 700 if targets[7] != IGNORE else 3  # one unlikely target: kept
    eps = 1e-3
    runs = [_run(lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, _config(vs, ts), deterministic=True,  # noqa: B023
                                                        filter_eps=eps), hidden, weight, targets, grad_out)
            for vs, ts in ((1, 1), (3, 2), (3, 2))]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    exact = _run(lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, _config(1, 1), deterministic=True),
                 hidden, weight, targets, grad_out)
    assert torch.equal(runs[0][0], exact[0]) and not torch.equal(runs[0][2], exact[2])  # something was dropped
    bound_hidden, bound_weight, _, _ = _filter_bounds(hidden, weight, targets, grad_out, eps)
    for got, ref, bound in ((runs[0][1], exact[1], bound_hidden), (runs[0][2], exact[2], bound_weight)):
        assert torch.all((got - ref).double().abs() <= bound + 1e-6 * max(1.0, float(ref.abs().max())))


@pytest.mark.parametrize("block_n", [16, 32])
def test_forward_tile_verdicts_match_the_float64_criterion_and_skip_the_same_gradient(block_n, fresh_seed):
    """``live_tiles`` (from the forward's tile maxima, lse and target log-probs) marks a tile
    live exactly when some valid row has |onehot - p| >= eps in it by the float64 softmax
    (entries within float32's error of eps may go either way); a confident model has dead
    tiles; skipping them outright gives the same bits as recomputing them and filtering after."""
    from judgefree.kernels.linear_logprobs_deterministic import deterministic_backward_grads
    from judgefree.kernels.linear_logprobs_filter import live_tiles

    hidden, weight, targets, grad_out = _inputs(45, 40, 700, seed=fresh_seed, scale=0.1)
    hidden += 6.0 * weight[torch.where(targets == IGNORE, 0, targets)]  # confident rows
    targets[7] = (targets[7] + 350) % 700 if targets[7] != IGNORE else 3  # one unlikely target
    hidden[11] *= 0.05  # one flat row: every tile live for it
    eps, block_v, tol = 1e-3, 128, 1e-5
    valid = targets != IGNORE
    safe = torch.where(valid, targets, 0)
    config = KernelConfig(block_n=block_n, block_v=block_v, block_h=64, vocab_splits=2, token_splits=2)
    tile_max = torch.empty(6, 45)
    lse, target_logit = forward_lse(hidden, weight, safe, config, tile_max=tile_max)
    logits = hidden.double() @ weight.double().T
    torch.testing.assert_close(tile_max.double(), torch.nn.functional.pad(logits, (0, 68), value=float("-inf"))
                               .reshape(45, 6, 128).amax(2).T, rtol=1e-5, atol=1e-5)
    live = live_tiles(tile_max, lse, target_logit - lse, safe, valid, block_n, block_v, eps)
    n_blocks = -(-45 // block_n)
    assert live.shape == (n_blocks, 6) and live.dtype == torch.uint8
    delta = torch.nn.functional.one_hot(safe, 700).double() - torch.softmax(logits, dim=1)
    delta = torch.where(valid[:, None], delta.abs(), 0.0)
    delta = torch.nn.functional.pad(delta, (0, 68, 0, n_blocks * block_n - 45))
    tile_delta = delta.reshape(n_blocks, block_n, 6, 128).amax(dim=(1, 3))
    assert torch.all(live[tile_delta >= eps + tol] == 1) and torch.all(live[tile_delta < eps - tol] == 0)
    assert 0 < int((live == 0).sum()) < live.numel()
    grad = torch.where(valid, grad_out, 0.0)
    skipped = deterministic_backward_grads(hidden, weight, safe, lse, grad, config, True, True, eps, live=live)
    recomputed = deterministic_backward_grads(hidden, weight, safe, lse, grad, config, True, True, eps)
    for a, b in zip(skipped, recomputed):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="live must be"):  # verdicts of other tiles: refused, not misread
        backward_grads(hidden, weight, safe, lse, grad, config, True, True, eps, live[:, :-1].contiguous())


@pytest.mark.parametrize("filter_eps", [None, 1e-3])
def test_frozen_weight_tiles_wider_than_the_forward_tiles(filter_eps, fresh_seed):
    """The frozen backward's own vocab tile (``frozen_block_v`` = 2 x block_v, as on the GPU)
    against float64; filtered, within the documented bound, with the forward's verdicts
    combined into the wider tiles. A frozen_block_v that is no multiple of block_v is refused."""
    hidden, weight, targets, grad_out = _inputs(45, 40, 700, seed=fresh_seed, scale=0.1)
    hidden += 6.0 * weight[torch.where(targets == IGNORE, 0, targets)]
    targets[7] = (targets[7] + 350) % 700 if targets[7] != IGNORE else 3
    config = KernelConfig(block_n=16, block_v=128, block_h=32, vocab_splits=2, frozen_block_v=256, frozen_block_h=16)
    got = _run(lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, config, filter_eps=filter_eps),
               hidden, weight, targets, grad_out, train_weight=False)
    ref = _run(lambda h, w, t: linear_logprobs_eager(h, w, t, IGNORE), hidden.double(), weight.double(), targets,
               grad_out, train_weight=False)
    assert got[2] is None
    _close(got[0], ref[0], 1e-4)
    if filter_eps is None:
        _close(got[1], ref[1], 1e-4)
    else:
        bound_hidden, _, _, _ = _filter_bounds(hidden, weight, targets, grad_out, filter_eps)
        slack = 1e-5 * max(1.0, float(ref[1].abs().max()))
        assert torch.all((got[1].double() - ref[1]).abs() <= bound_hidden + slack)
        exact = _run(lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, config), hidden, weight, targets,
                     grad_out, train_weight=False)
        assert not torch.equal(got[1], exact[1])  # something was dropped
    with pytest.raises(ValueError, match="frozen_block_v"):
        KernelConfig(block_n=16, block_v=128, block_h=32, frozen_block_v=192)


def test_filtering_keeps_the_nan_gradient_of_a_broken_row(fresh_seed):
    """A NaN in one row's hidden state: filtered or not, that row's values and gradients are
    NaN (a dead-tile verdict must not turn them into zeros), the other rows' stay finite."""
    hidden, weight, targets, grad_out = _inputs(40, 40, 700, seed=fresh_seed, scale=0.1)
    hidden += 6.0 * weight[torch.where(targets == IGNORE, 0, targets)]
    targets[3] = 5
    hidden[3, 7] = float("nan")
    config = KernelConfig(block_n=16, block_v=128, block_h=64, vocab_splits=2)
    for eps in (None, 1e-3):
        out, g_hidden, g_weight = _run(lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, config, filter_eps=eps),
                                       hidden, weight, targets, grad_out)
        assert torch.isnan(out[3]) and torch.isnan(g_hidden[3]).all(), eps
        others = torch.arange(40) != 3
        assert torch.isfinite(out[others]).all() and torch.isfinite(g_hidden[others]).all(), eps
        assert torch.isnan(g_weight).any(), eps


def test_filter_eps_is_validated():
    hidden, weight, targets = torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1, 2])
    for bad in (0.0, 1.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="filter_eps"):
            linear_logprobs(hidden, weight, targets, filter_eps=bad)
    # The PyTorch path is exact, hence within any bound: the option is accepted there.
    exact = linear_logprobs(hidden, weight, targets, backend="torch")
    assert torch.equal(linear_logprobs(hidden, weight, targets, backend="torch", filter_eps=1e-3), exact)


@pytest.mark.parametrize("outer, inner", [(64, 250), (64, 384), (47, 251), (1, 250), (132, 250), (3, 7)])
def test_wave_splits_fill_whole_waves(outer, inner):
    """The makespan (waves x tiles per CTA) is within 15% of perfect balance (or one tile more)
    for the product's shapes (N=8192 and 6001 in 128-token blocks; V=32000 and 49152 in 128-wide
    blocks) and awkward ones, with at most two waves' worth of CTAs."""
    sms = 132
    splits = wave_splits(outer, inner, sms)
    assert 1 <= splits <= inner
    waves = -(-outer * splits // sms)
    span = waves * -(-inner // splits)
    ideal = outer * inner / sms
    assert span <= max(1.15 * ideal, ideal + 1)
    assert outer * splits <= max(2 * sms, outer)


@pytest.mark.gpu
def test_gpu_deterministic_and_filtered_at_the_gpu_tiles(fresh_seed):
    """The compiled kernels with their GPU tiles (bf16): deterministic bit-identical across two
    runs and across split counts; filtered within its bound of the exact result."""
    hidden, weight, targets, grad_out = _inputs(1100, 320, 7001, seed=fresh_seed, dtype=torch.bfloat16, scale=0.1)
    hidden = (hidden.float() + 6.0 * weight.float()[torch.where(targets == IGNORE, 0, targets)]).to(torch.bfloat16)
    cuda = [t.cuda() for t in (hidden, weight, targets, grad_out)]
    runs = []
    for splits in (None, 3, 3):
        config = replace(GPU_CONFIG, vocab_splits=splits, token_splits=splits)
        runs.append(_run(lambda h, w, t: linear_logprobs_triton(h, w, t, IGNORE, config, deterministic=True), *cuda))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    exact = _run(lambda h, w, t: linear_logprobs(h, w, t), *cuda)
    filtered = _run(lambda h, w, t: linear_logprobs(h, w, t, filter_eps=1e-3), *cuda)
    bound_hidden, bound_weight, _, _ = _filter_bounds(hidden.float(), weight.float(), targets, grad_out, 1e-3)
    # bf16 gradients: the bound plus one bf16 rounding of the exact values.
    for got, ref, bound in ((filtered[1], exact[1], bound_hidden), (filtered[2], exact[2], bound_weight)):
        slack = 2**-7 * ref.double().abs().cpu()
        assert torch.all((got - ref).double().abs().cpu() <= bound + slack + 1e-6)
    assert torch.equal(filtered[0], exact[0])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_frozen_weight_on_its_wide_tiles(dtype, fresh_seed):
    """The frozen backward at its GPU tiles (128 x 256 x 16, two forward tiles per backward
    tile, a ragged last one) against float64; filtered, within the bound (plus one bf16 rounding)."""
    assert GPU_CONFIG.frozen_block_v == 2 * GPU_CONFIG.block_v
    hidden, weight, targets, grad_out = _inputs(1100, 320, 7001, seed=fresh_seed, dtype=dtype, scale=0.1)
    hidden = (hidden.float() + 6.0 * weight.float()[torch.where(targets == IGNORE, 0, targets)]).to(dtype)
    cuda = [t.cuda() for t in (hidden, weight, targets, grad_out)]
    got = _run(lambda h, w, t: linear_logprobs(h, w, t), *cuda, train_weight=False)
    ref = _run(lambda h, w, t: linear_logprobs_eager(h, w, t, IGNORE), hidden.double(), weight.double(), targets,
               grad_out, train_weight=False)
    assert got[2] is None
    rel = 1e-4 if dtype == torch.float32 else 2e-2
    _close(got[0].cpu(), ref[0], 1e-4)
    _close(got[1].cpu(), ref[1], rel)
    filtered = _run(lambda h, w, t: linear_logprobs(h, w, t, filter_eps=1e-3), *cuda, train_weight=False)
    bound_hidden, _, _, _ = _filter_bounds(hidden.float(), weight.float(), targets, grad_out, 1e-3)
    slack = (2**-7 if dtype == torch.bfloat16 else 1e-5) * got[1].double().abs().cpu()
    assert torch.all((filtered[1] - got[1]).double().abs().cpu() <= bound_hidden + slack + 1e-6)
    assert torch.equal(filtered[0], got[0])


def test_wave_splits_keep_the_running_token_blocks_x_in_l2():
    """N=8192, H=4096, bf16: all 64 token blocks' X (64 MiB) exceeds a 50 MiB L2; the choice
    runs few enough token blocks at once that their X fits in 3/4 of it, for at most one tile
    more per CTA than the best balance without that preference. H=576: X fits anyway."""
    l2, x_block = 50 * 2**20, 128 * 4096 * 2
    splits = wave_splits(64, 250, 132, x_block, l2)
    running = min(64, -(-132 // splits))
    assert running * x_block <= 0.75 * l2
    span = -(-64 * splits // 132) * -(-250 // splits)
    best = wave_splits(64, 250, 132)
    assert span <= -(-64 * best // 132) * -(-250 // best) + 1
    assert wave_splits(64, 384, 132, 128 * 576 * 2, l2) == wave_splits(64, 384, 132)
