"""linear_logprobs' packed filtered backward: per vocab tile, dense blocks of the rows live there.

References: a plain Python walk over the verdicts for the row lists; the float64 per-(row, tile)
criterion for the verdicts; for the gradients, the float64 eager gradient with exactly the
(row, tile) pairs the verdicts drop zeroed (what the packed kernel must compute), the
unfiltered kernel result within the documented per-entry bound, and float64 within it. Two
regimes: a confident model where most (row, tile) pairs die, and an unconfident one where each
row keeps a different subset of tiles (so whole tiles stay live and only packing saves work).
"""

from __future__ import annotations

import pytest
import torch

from judgefree.kernels.linear_logprobs import linear_logprobs
from judgefree.kernels.linear_logprobs_filter import live_rows, live_tiles
from judgefree.kernels.linear_logprobs_pack import check_packed, group_rows_for_l2, pack_live_rows
from judgefree.kernels.linear_logprobs_triton import (
    GPU_CONFIG,
    KernelConfig,
    backward_grads,
    forward_lse,
    linear_logprobs_triton,
    packed_work,
)
from judgefree.testing.grads import run_with_grads as _run

IGNORE = -100


def _model(n, h, v, *, seed, confident, dtype=torch.float32):
    """Confident: each row points at its target (p_target ~ 1, most pairs dead). Unconfident: each
    row leans towards a few random vocab ids in different tiles, so rows keep different tiles."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(v, h, generator=gen) / h**0.5 * 3
    targets = torch.randint(0, v, (n,), generator=gen)
    if confident:
        hidden = torch.randn(n, h, generator=gen) * 0.1 + 6.0 * weight[targets]
        targets[5] = (targets[5] + v // 2) % v  # one unlikely target: kept
    else:
        favourites = torch.randint(0, v, (n, 2), generator=gen)
        hidden = torch.randn(n, h, generator=gen) * 0.2 + 2.5 * weight[favourites].sum(1)
    targets[torch.randperm(n, generator=gen)[:3]] = IGNORE
    targets[-1] = v - 1  # inside the ragged last vocab tile
    grad_out = torch.randn(n, generator=gen)
    return hidden.to(dtype), weight.to(dtype), targets, grad_out


def _delta64(hidden, weight, targets, grad_out):
    valid = targets != IGNORE
    logits = hidden.double() @ weight.double().T
    delta = torch.nn.functional.one_hot(torch.where(valid, targets, 0), weight.shape[0]).double() \
        - torch.softmax(logits, dim=1)
    return delta, torch.where(valid, grad_out.double(), 0.0)


def _verdicts(hidden, weight, targets, config, eps, bwd_block_v):
    valid = targets != IGNORE
    safe = torch.where(valid, targets, 0)
    tile_max = torch.empty(-(-weight.shape[0] // config.block_v), hidden.shape[0], device=hidden.device)
    lse, target_logit = forward_lse(hidden, weight, safe, config, tile_max=tile_max)
    return live_rows(tile_max, lse, target_logit - lse, safe, valid, config.block_v, eps, bwd_block_v), lse, safe


def _walk(row_live, block_n, group_rows):
    """The plain reference of the packing: (tile, rows) blocks, group by group, tile by tile."""
    tiles, n = row_live.shape
    out = []
    for g0 in range(0, n, group_rows):
        for b in range(tiles):
            rows = [r for r in range(g0, min(n, g0 + group_rows)) if row_live[b, r]]
            out += [(b, rows[i:i + block_n]) for i in range(0, len(rows), block_n)]
    return out


@pytest.mark.parametrize("n, tiles, block_n, group_rows, density",
                         [(45, 6, 16, 48, 0.2), (45, 6, 16, 16, 0.5), (100, 3, 8, 24, 0.05), (7, 2, 16, 16, 1.0),
                          (33, 4, 16, 32, 0.0)])
def test_pack_live_rows_lists_every_live_pair_once_in_dense_blocks(n, tiles, block_n, group_rows, density,
                                                                   fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    row_live = torch.rand(tiles, n, generator=gen) < density
    row_index, work = pack_live_rows(row_live, block_n, group_rows)
    assert row_index.dtype == work.dtype == torch.int32 and work.shape[1] == 3
    got = [(int(b), row_index[first:first + count].tolist()) for b, first, count in work.tolist()]
    assert got == _walk(row_live, block_n, group_rows)
    assert all(0 < len(rows) <= block_n for _, rows in got)  # no idle program
    assert row_index.numel() == int(row_live.sum())
    again = pack_live_rows(row_live.clone(), block_n, group_rows)  # deterministic
    assert torch.equal(again[0], row_index) and torch.equal(again[1], work)


def test_packing_inputs_are_checked():
    with pytest.raises(ValueError, match="row_live must be a bool"):
        pack_live_rows(torch.ones(2, 5, dtype=torch.uint8), 16, 16)
    with pytest.raises(ValueError, match="multiple of block_n"):
        pack_live_rows(torch.ones(2, 5, dtype=torch.bool), 16, 24)
    with pytest.raises(ValueError, match="row_index must be"):
        check_packed(torch.zeros(3, dtype=torch.int64), torch.zeros(1, 3, dtype=torch.int32), 5)
    with pytest.raises(ValueError, match="work must be"):
        check_packed(torch.zeros(3, dtype=torch.int32), torch.zeros(1, 2, dtype=torch.int32), 5)
    with pytest.raises(ValueError, match="outside"):
        check_packed(torch.tensor([0, 7], dtype=torch.int32), torch.zeros(1, 3, dtype=torch.int32), 5)
    with pytest.raises(ValueError, match="pack_group_rows"):
        KernelConfig(block_n=16, block_v=128, block_h=32, pack_group_rows=24)


def test_group_rows_keep_x_and_dx_in_l2():
    l2 = 50 * 2**20
    assert group_rows_for_l2(8192, 576, 2, 128, l2) == 8192  # 27 MiB of X + dX: one group
    rows = group_rows_for_l2(8192, 4096, 2, 128, l2)  # 24 KiB a row
    assert rows % 128 == 0 and rows * 4096 * 6 <= 0.75 * l2 < (rows + 128) * 4096 * 6
    assert group_rows_for_l2(6001, 576, 2, 128, None) == 6016


@pytest.mark.parametrize("confident, bwd_block_v", [(True, 128), (False, 128), (False, 256)])
def test_row_verdicts_match_the_float64_criterion(confident, bwd_block_v, fresh_seed):
    """live_rows[b, n] is True exactly when valid row n has some |onehot - p| >= eps in backward
    tile b by the float64 softmax (entries within float32's error of eps may go either way);
    live_tiles is its reduction over token blocks."""
    v = 1100  # 9 vocab tiles of 128 (the last ragged), 5 of 256
    hidden, weight, targets, _ = _model(45, 40, v, seed=fresh_seed, confident=confident)
    eps, tol = 1e-3, 1e-5
    config = KernelConfig(block_n=16, block_v=128, block_h=64, vocab_splits=2)
    row_live, lse, safe = _verdicts(hidden, weight, targets, config, eps, bwd_block_v)
    tiles = -(-v // bwd_block_v)
    assert row_live.shape == (tiles, 45) and row_live.dtype == torch.bool
    delta, _ = _delta64(hidden, weight, targets, torch.ones(45))
    delta = torch.where((targets != IGNORE)[:, None], delta.abs(), 0.0)
    pair = torch.nn.functional.pad(delta, (0, tiles * bwd_block_v - v)).reshape(45, tiles, bwd_block_v).amax(2).T
    assert torch.all(row_live[pair >= eps + tol]) and not torch.any(row_live[pair < eps - tol])
    fraction = float(row_live.float().mean())
    assert (fraction < 0.2) if confident else (0.15 < fraction < 0.7), fraction
    tile_max = torch.empty(9, 45)
    lse2, target_logit = forward_lse(hidden, weight, safe, config, tile_max=tile_max)
    tiles16 = live_tiles(tile_max, lse2, target_logit - lse2, safe, targets != IGNORE, 16, 128, eps, bwd_block_v)
    assert torch.equal(tiles16.bool(), torch.nn.functional.pad(row_live, (0, 3)).reshape(tiles, 3, 16).any(2).T)


@pytest.mark.parametrize("confident", [True, False])
@pytest.mark.parametrize("dtype, train_weight", [(torch.float32, True), (torch.bfloat16, True),
                                                 (torch.float32, False)])
def test_packed_backward_is_the_gradient_of_the_live_pairs_within_the_bound(confident, dtype, train_weight,
                                                                             fresh_seed):
    """The packed backward (frozen weight: on 2 x 128-wide tiles) equals the float64 gradient with
    the verdicts' dead (row, tile) pairs zeroed, moves the unfiltered result by no more than the
    documented bound, and runs fewer blocks than tile filtering would when rows differ."""
    n, h, v, eps = 45, 40, 1100, 1e-3
    hidden, weight, targets, grad_out = _model(n, h, v, seed=fresh_seed, confident=confident, dtype=dtype)
    config = KernelConfig(block_n=16, block_v=128, block_h=32, vocab_splits=2, frozen_block_v=256,
                          frozen_block_h=16, pack_group_rows=32)  # two packing groups, the last short
    bwd_block_v = 128 if train_weight else 256
    packed = _run(lambda a, b, t: linear_logprobs_triton(a, b, t, IGNORE, config, filter_eps=eps),
                  hidden, weight, targets, grad_out, train_weight)
    exact = _run(lambda a, b, t: linear_logprobs_triton(a, b, t, IGNORE, config),
                 hidden, weight, targets, grad_out, train_weight)
    assert torch.equal(packed[0], exact[0])  # the forward is untouched
    # What the kernel must compute: the float64 gradient of exactly the live pairs.
    hid64, w64 = hidden.double(), weight.double()
    row_live, _, _ = _verdicts(hidden, weight, targets, config, eps, bwd_block_v)
    keep = row_live.repeat_interleave(bwd_block_v, dim=0)[:v].T  # [N, V]
    delta, g = _delta64(hidden, weight, targets, grad_out)
    d_live = torch.where(keep, delta, 0.0) * g[:, None]
    rel = 1e-4 if dtype == torch.float32 else 2e-2
    for got, want in ((packed[1], d_live @ w64), (packed[2], d_live.T @ hid64 if train_weight else None)):
        if want is None:
            assert got is None
            continue
        torch.testing.assert_close(got.double(), want, atol=rel * float(want.abs().max().clamp(min=1)), rtol=rel)
    # Everything dropped is below eps (float32's error of p widens it), and within the bound; the
    # exact kernel's own fp32 p is within p_err of float64 on each dropped entry.
    dead = ~keep & (g != 0)[:, None]  # ignored rows carry no gradient
    p_err = 1e-5
    assert float(torch.where(dead, delta.abs(), 0.0).max()) < eps + p_err
    small = torch.where(dead, delta.abs() + p_err, 0.0) * g.abs()[:, None]
    bounds = (small.sum(1)[:, None] * w64.abs().amax(0)[None, :], small.T @ hid64.abs())
    for got, ref, bound in zip(packed[1:], exact[1:], bounds):
        if ref is None:
            continue
        slack = (1e-6 if dtype == torch.float32 else 2**-7) * ref.double().abs() + 1e-6 * float(ref.abs().max())
        assert torch.all((got.double() - ref.double()).abs() <= bound + slack)
    assert not torch.equal(packed[1], exact[1])  # something was dropped
    # Packing matters: fewer blocks than the tiles that keep a live row.
    grad = torch.where(targets != IGNORE, grad_out, 0.0)
    _, work = packed_work(row_live, grad, config, hidden)
    live_tile_count = int(torch.nn.functional.pad(row_live & (grad != 0)[None, :], (0, 3))
                          .reshape(row_live.shape[0], 3, 16).any(2).sum())
    assert work.shape[0] <= live_tile_count
    if not confident:  # whole tiles mostly stay live; packing still drops blocks
        assert work.shape[0] < live_tile_count


def test_packed_backward_with_every_pair_dead_and_with_the_lists_refused_beside_tile_verdicts(fresh_seed):
    """A batch whose every row is confident (or ignored): no work entry, zero gradients, no launch;
    passing both kinds of verdicts is refused rather than one silently ignored."""
    hidden, weight, targets, grad_out = _model(20, 40, 300, seed=fresh_seed, confident=True)
    targets[5] = targets[-1] = IGNORE  # drop _model's unlikely targets: every valid row has p_target ~ 1
    config = KernelConfig(block_n=16, block_v=128, block_h=64, vocab_splits=1)
    eps = 0.5  # 1 - p_target < 0.5 everywhere: all pairs dead
    out, g_hidden, g_weight = _run(lambda a, b, t: linear_logprobs_triton(a, b, t, IGNORE, config, filter_eps=eps),
                                   hidden, weight, targets, grad_out)
    assert torch.all(g_hidden == 0) and torch.all(g_weight == 0) and torch.isfinite(out).all()
    row_live, lse, safe = _verdicts(hidden, weight, targets, config, eps, 128)
    assert not row_live.any()
    grad = torch.where(targets != IGNORE, grad_out, 0.0)
    lists = packed_work(torch.ones_like(row_live), grad, config, hidden)
    with pytest.raises(ValueError, match="not both"):
        backward_grads(hidden, weight, safe, lse, grad, config, True, True, eps,
                       torch.ones(2, 3, dtype=torch.uint8), lists)


def test_packed_backward_at_extreme_logits_is_finite_and_within_the_bound(fresh_seed):
    """Logits in the thousands (one-hot softmax up to fp32 rounding, an exp that would overflow
    without the saved lse): the packed gradients stay finite and within the bound of float64."""
    gen = torch.Generator().manual_seed(fresh_seed)
    n, h, v, eps = 23, 40, 333, 1e-3
    hidden = torch.randn(n, h, generator=gen) * 400.0
    weight = torch.randn(v, h, generator=gen) / h**0.5 * 3
    targets = torch.randint(0, v, (n,), generator=gen)
    targets[0] = torch.argmax(hidden[0].double() @ weight.double().T)  # a logp of ~0: a confident row
    targets[4] = IGNORE
    grad_out = torch.randn(n, generator=gen)
    config = KernelConfig(block_n=16, block_v=128, block_h=64, vocab_splits=2)
    out, g_hidden, g_weight = _run(lambda a, b, t: linear_logprobs_triton(a, b, t, IGNORE, config, filter_eps=eps),
                                   hidden, weight, targets, grad_out)
    assert torch.isfinite(out).all() and torch.isfinite(g_hidden).all() and torch.isfinite(g_weight).all()
    delta, g = _delta64(hidden, weight, targets, grad_out)
    small = torch.where(delta.abs() < eps + 1e-5, delta.abs() + 1e-5, 0.0) * g.abs()[:, None]
    bounds = (small.sum(1)[:, None] * weight.double().abs().amax(0)[None, :], small.T @ hidden.double().abs())
    for got, want, bound in ((g_hidden, (delta * g[:, None]) @ weight.double(), bounds[0]),
                             (g_weight, (delta * g[:, None]).T @ hidden.double(), bounds[1])):
        assert torch.all((got.double() - want).abs() <= bound + 1e-4 * float(want.abs().max()))


def test_filter_eps_takes_the_packed_path_unless_told_otherwise(monkeypatch, fresh_seed):
    """linear_logprobs(..., filter_eps) builds the packed lists (default config); filter_packed=False
    and deterministic=True keep the tile verdicts."""
    import judgefree.kernels.linear_logprobs_triton as lt

    calls = []
    real = lt.packed_work
    monkeypatch.setattr(lt, "packed_work", lambda *a: calls.append(1) or real(*a))
    hidden, weight, targets, grad_out = _model(20, 40, 300, seed=fresh_seed, confident=False)
    _run(lambda a, b, t: linear_logprobs(a, b, t, backend="triton", filter_eps=1e-3), hidden, weight, targets,
         grad_out)
    assert len(calls) == 1 and GPU_CONFIG.filter_packed
    tiles = KernelConfig(block_n=16, block_v=128, block_h=64, vocab_splits=1, filter_packed=False)
    _run(lambda a, b, t: linear_logprobs_triton(a, b, t, IGNORE, tiles, filter_eps=1e-3), hidden, weight, targets,
         grad_out)
    _run(lambda a, b, t: linear_logprobs_triton(a, b, t, IGNORE, None, deterministic=True, filter_eps=1e-3),
         hidden, weight, targets, grad_out)
    assert len(calls) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("train_weight", [True, False])
def test_gpu_packed_backward_on_rows_that_keep_different_tiles(train_weight, fresh_seed):
    """The compiled packed backward at the GPU tiles (bf16, 1100 x 320 x 7001, unconfident rows,
    so nearly every 128-row tile stays live and only packing drops work): within the bound of
    the exact kernel result, plus one bf16 rounding; fewer blocks than live tiles."""
    hidden, weight, targets, grad_out = _model(1100, 320, 7001, seed=fresh_seed, confident=False,
                                               dtype=torch.bfloat16)
    cuda = [t.cuda() for t in (hidden, weight, targets, grad_out)]
    eps = 2.0**-12
    exact = _run(lambda a, b, t: linear_logprobs(a, b, t), *cuda, train_weight=train_weight)
    packed = _run(lambda a, b, t: linear_logprobs(a, b, t, filter_eps=eps), *cuda, train_weight=train_weight)
    assert torch.equal(packed[0], exact[0])
    delta, g = _delta64(hidden.float(), weight.float(), targets, grad_out)
    small = torch.where(delta.abs() < eps + 1e-5, delta.abs() + 1e-5, 0.0) * g.abs()[:, None]
    bounds = (small.sum(1)[:, None] * weight.double().abs().amax(0)[None, :], small.T @ hidden.double().abs())
    for got, ref, bound in zip(packed[1:], exact[1:], bounds):
        if ref is None:
            assert got is None
            continue
        slack = 2**-7 * ref.double().abs().cpu() + 1e-6
        assert torch.all((got - ref).double().abs().cpu() <= bound + slack)
    row_live, _, _ = _verdicts(*cuda[:3], GPU_CONFIG, eps, GPU_CONFIG.block_v if train_weight else
                               GPU_CONFIG.frozen_block_v)
    grad = torch.where(cuda[2] != IGNORE, cuda[3], 0.0)
    _, work = packed_work(row_live, grad, GPU_CONFIG, cuda[0])
    n_blocks = -(-1100 // GPU_CONFIG.block_n)
    tiles = torch.nn.functional.pad(row_live & (grad != 0)[None, :], (0, n_blocks * GPU_CONFIG.block_n - 1100))
    tiles = int(tiles.reshape(row_live.shape[0], n_blocks, GPU_CONFIG.block_n).any(2).sum())
    assert 0 < work.shape[0] < tiles  # packing drops blocks where whole tiles stay live
