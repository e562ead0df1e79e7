"""Gradient filtering decided in the forward: which backward tiles can be skipped outright.

Cut Cross-Entropy recomputes every [token block, vocab block] logit tile in its backward and
only then drops the tiles whose |d logits| are all below a threshold, so a filtered backward
still costs one full recompute GEMM. Here the forward, which computes every logit anyway,
records each row's largest logit per vocab tile (``tile_max`` [v_blocks, N], one float per
row and tile); with the final log-sum-exp that bounds every probability of the tile,
p_nv <= exp(tile_max[b, n] - lse[n]), and the target's log-probability bounds the rest of a
row (sum of the others = 1 - p_target). A tile is dead when none of its valid rows can have
|onehot - p| >= ``filter_eps`` in it (``live_tiles``): the backward's own criterion
(``tile_matters``), decided without the recompute, so the documented error bound is unchanged.
Dead tiles skip their recompute GEMM and both gradient GEMMs.

Kept between forward and backward: one byte per tile ([n_blocks, v_blocks], 16 KB at
N = 8192, V = 32000); ``tile_max`` is freed when the forward returns.
"""

from __future__ import annotations

import math

import torch


def live_rows(tile_max: torch.Tensor, lse: torch.Tensor, target_logp: torch.Tensor, safe_targets: torch.Tensor,
              valid: torch.Tensor, block_v: int, filter_eps: float, backward_block_v: int | None = None) -> torch.Tensor:
    """bool [bwd_blocks, N]: True where row n may have some |onehot - p| >= filter_eps in backward
    vocab tile b (the per-(row, tile) verdict; ``live_tiles`` reduces it over token blocks, the
    packed backward packs the True rows of each tile). ``block_v``: the forward's vocab tile
    (``tile_max``'s); ``backward_block_v`` (a multiple of it, default the same): the backward's,
    live for a row when any forward tile in it is.

    Per row n and vocab tile b: a confident row (1 - p_target < eps) has every |onehot - p| <
    eps in every tile (the other entries sum to 1 - p_target); otherwise the target's tile is
    live (|1 - p_target| >= eps) and another tile is live when its largest p, exp(tile_max -
    lse), may reach eps. This is the backward's own criterion (``tile_matters``) decided
    without the recompute, on valid rows instead of rows with nonzero upstream gradient."""
    v_blocks, _ = tile_max.shape
    if not 0.0 < filter_eps < 1.0:
        raise ValueError(f"filter_eps must be in (0, 1), got {filter_eps}")
    ratio = (backward_block_v or block_v) // block_v
    if ratio * block_v != (backward_block_v or block_v):
        raise ValueError(f"backward_block_v {backward_block_v} must be a multiple of block_v {block_v}")
    block_of = torch.arange(v_blocks, device=tile_max.device)[:, None]
    # Written as "not below" so that NaN (a NaN or infinite input) keeps the tile: filtering
    # must not hide a broken row's NaN gradient.
    hot = ~((tile_max - lse[None, :]) < math.log(filter_eps))  # p may reach filter_eps in the tile
    hot |= block_of == (safe_targets // block_v)[None, :]  # the target's tile
    uncertain = ~(-torch.expm1(target_logp) < filter_eps)  # 1 - p_target
    hot &= (valid & uncertain)[None, :]
    if ratio == 1:
        return hot
    bwd_blocks = -(-v_blocks // ratio)
    hot = torch.nn.functional.pad(hot, (0, 0, 0, bwd_blocks * ratio - v_blocks))
    return hot.reshape(bwd_blocks, ratio, -1).any(dim=1)


def live_tiles(tile_max: torch.Tensor, lse: torch.Tensor, target_logp: torch.Tensor, safe_targets: torch.Tensor,
               valid: torch.Tensor, block_n: int, block_v: int, filter_eps: float,
               backward_block_v: int | None = None) -> torch.Tensor:
    """uint8 [n_blocks, v_blocks]: 1 where some valid row of the tile may have |onehot - p| >= filter_eps
    (``live_rows`` reduced over each token block of ``block_n`` rows)."""
    hot = live_rows(tile_max, lse, target_logp, safe_targets, valid, block_v, filter_eps, backward_block_v)
    return tiles_of_rows(hot, block_n)


def tiles_of_rows(row_live: torch.Tensor, block_n: int) -> torch.Tensor:
    """uint8 [n_blocks, bwd_blocks] from ``live_rows``' bool [bwd_blocks, N]: a tile is live when
    one of its ``block_n`` rows is."""
    bwd_blocks, n_tokens = row_live.shape
    n_blocks = -(-n_tokens // block_n)
    hot = torch.nn.functional.pad(row_live, (0, n_blocks * block_n - n_tokens))
    return hot.reshape(bwd_blocks, n_blocks, block_n).any(dim=2).T.contiguous().to(torch.uint8)


def check_live(live: torch.Tensor | None, n_blocks: int, v_blocks: int) -> None:
    """The verdicts a backward kernel indexes without bounds checks: their shape and dtype."""
    if live is not None and (tuple(live.shape) != (n_blocks, v_blocks) or live.dtype != torch.uint8
                             or not live.is_contiguous()):
        raise ValueError(f"live must be a contiguous uint8 [{n_blocks}, {v_blocks}] tensor (live_tiles at the "
                         f"backward's tiles), got {live.dtype} {tuple(live.shape)}")
