"""Row packing for the filtered backward: per vocabulary tile, only the rows live there.

On real DPO data (SmolLM2-135M scoring its own samples, ``bench/linear_logprobs_live.py``) only
17-22% of the (row, 128-wide vocab tile) pairs have some |onehot - p| >= 2^-12, but they are
spread differently per row, so 96-99.5% of 128 x 128 (token block, vocab block) tiles keep at
least one live row and skipping whole tiles saves nothing. The packed backward instead runs,
per vocab tile, dense blocks of ``block_n`` rows gathered from the rows live there: the work is
proportional to the live pairs, not to the tiles touched by one.

``pack_live_rows`` turns the forward's per-(row, tile) verdicts (``live_rows``, bool
[bwd_blocks, N]) into
- ``row_index`` int32 [L]: for each (row group, vocab tile) segment in order, its live rows in
  increasing order (L = live pairs);
- ``work`` int32 [W, 3]: one entry per program, (vocab tile, first slot in ``row_index``, rows
  in the block <= block_n), so the grid has no idle program.
Rows are packed within groups of ``group_rows`` consecutive rows (``group_rows_for_l2``): the
work list visits group by group, so a group's X and fp32 dX rows stay in L2 while its vocab
tiles go by (one group when all of X and dX fit, as at H = 576). Deterministic (nonzero's
row-major order); memory O(N x v_blocks) bytes: the verdicts (1 B per pair), nonzero's int64
[L, 3] (24 B per live pair, transient) and the kept ``row_index`` (4 B per live pair). Two host
syncs (nonzero's size and the block count that sizes the grid).
"""

from __future__ import annotations

import torch


def group_rows_for_l2(n_tokens: int, hidden: int, elem_bytes: int, block_n: int, l2_bytes: int | None) -> int:
    """Rows per packing group: all of them when their X and fp32 dX rows fit in 3/4 of L2 (the
    rest is for the streamed weight tiles), else the largest multiple of ``block_n`` that does."""
    whole = -(-n_tokens // block_n) * block_n
    if l2_bytes is None:
        return whole
    per_row = hidden * (elem_bytes + 4)
    fit = int(0.75 * l2_bytes // per_row) // block_n * block_n
    return max(block_n, min(whole, fit))


def pack_live_rows(row_live: torch.Tensor, block_n: int, group_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row_index int32 [L], work int32 [W, 3]) from bool ``row_live`` [bwd_blocks, N] (see the module)."""
    if row_live.dim() != 2 or row_live.dtype != torch.bool:
        raise ValueError(f"row_live must be a bool [bwd_blocks, N] tensor, got {row_live.dtype} "
                         f"{tuple(row_live.shape)}")
    if block_n < 1 or group_rows < 1 or group_rows % block_n:
        raise ValueError(f"group_rows {group_rows} must be a positive multiple of block_n {block_n}")
    bwd_blocks, n_tokens = row_live.shape
    if n_tokens * bwd_blocks >= 2**31:
        raise ValueError(f"{n_tokens} rows x {bwd_blocks} vocab tiles overflow the int32 row index")
    device = row_live.device
    groups = max(1, -(-n_tokens // group_rows))
    hot = torch.nn.functional.pad(row_live, (0, groups * group_rows - n_tokens))
    hot = hot.reshape(bwd_blocks, groups, group_rows).transpose(0, 1)  # [groups, tiles, rows]: visit order
    live = hot.nonzero()  # row-major: by group, then vocab tile, then row
    row_index = (live[:, 0] * group_rows + live[:, 2]).to(torch.int32)
    counts = hot.sum(dim=2).reshape(-1)  # live rows per (group, tile) segment, in row_index's order
    offsets = torch.cumsum(counts, 0) - counts
    blocks = (counts + block_n - 1) // block_n
    total = int(blocks.sum())
    segment = torch.repeat_interleave(torch.arange(counts.numel(), device=device), blocks, output_size=total)
    first = torch.cumsum(blocks, 0) - blocks
    within = (torch.arange(total, device=device) - first[segment]) * block_n
    work = torch.stack([segment % bwd_blocks, offsets[segment] + within,
                        torch.clamp(counts[segment] - within, max=block_n)], dim=1)
    return row_index, work.to(torch.int32).contiguous()


def check_packed(row_index: torch.Tensor, work: torch.Tensor, n_tokens: int) -> None:
    """The packed lists a backward kernel indexes without bounds checks: dtypes, shapes, layout."""
    if row_index.dtype != torch.int32 or row_index.dim() != 1 or not row_index.is_contiguous():
        raise ValueError(f"row_index must be a contiguous int32 [L] tensor, got {row_index.dtype} "
                         f"{tuple(row_index.shape)}")
    if work.dtype != torch.int32 or work.dim() != 2 or work.shape[1] != 3 or not work.is_contiguous():
        raise ValueError(f"work must be a contiguous int32 [W, 3] tensor (vocab tile, first slot, count), got "
                         f"{work.dtype} {tuple(work.shape)}")
    if row_index.numel() > 0 and row_index.device.type == "cpu" and int(row_index.max()) >= n_tokens:
        raise ValueError(f"row_index holds row {int(row_index.max())} outside [0, {n_tokens})")
