"""Swap, split and keep: the decisions made from the two CLIP scores of each pair.

A pair is swapped when chosen scores strictly below rejected, so ``score_diff`` = chosen -
rejected >= 0 afterwards (``on_disagreement="swap"``, the paper's method). The ablations' other
modes: ``"drop"`` keeps the generation's roles and drops such pairs (never kept, no split);
``"ignore"`` keeps the roles and the pairs whatever CLIP says (h order alone, no verification;
``score_diff`` may then be negative). Scored pairs are ranked by difference (ties by stored order) and cut
into ``splits`` groups of equal size: split 0 holds the smallest differences, split k-1 the
largest. A pair is kept when its split is among ``keep_splits`` or its difference lies in
``keep_diff`` (inclusive); with neither, every scored pair is kept. Pairs without both scores
get no split and are not kept: an unreadable image (curation lists the pair as skipped), or a
response with no text to score (empty, blanks or punctuation only: 0 segments). Such a pair is
dropped rather than decided by its empty side: CLIP cannot verify it, and the kept splits are
defined by score differences it has none of. The summary counts them as ``empty_response``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from judgefree.store.records import PairRecord

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
DISAGREEMENT_MODES = ("swap", "drop", "ignore")


@dataclass(frozen=True, slots=True)
class Selection:
    splits: int = 10
    keep_splits: tuple[int, ...] | None = None
    keep_diff: tuple[float, float] | None = None
    on_disagreement: str = "swap"  # what a pair whose chosen scores below rejected becomes

    def __post_init__(self) -> None:
        if self.on_disagreement not in DISAGREEMENT_MODES:
            raise ValueError(f"on_disagreement must be one of {', '.join(DISAGREEMENT_MODES)}, "
                             f"got {self.on_disagreement!r}")
        if self.splits < 1:
            raise ValueError(f"splits must be >= 1, got {self.splits}")
        if self.keep_splits is not None and self.keep_diff is not None:
            raise ValueError("keep a split by index or a range of differences, not both")
        for index in self.keep_splits or ():
            if not 0 <= index < self.splits:
                raise ValueError(f"keep: split index {index} is outside 0..{self.splits - 1}")
        if self.keep_diff is not None:
            lo, hi = self.keep_diff
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ValueError(f"keep_diff must be a finite range LO <= HI, got {self.keep_diff}")


def empty_sides(record: PairRecord) -> list[str]:
    """The roles ("chosen", "rejected") of ``record`` that CLIP scored and found no text in."""
    return [role for role in ("chosen", "rejected")
            if getattr(record, f"{role}_score") is None and getattr(record, f"{role}_segments") == 0]


def orient(record: PairRecord, swap: bool = True) -> PairRecord:
    """The record with the higher-scoring response as chosen (``swap``; else the roles as
    generated), ``swapped`` and ``score_diff`` set."""
    if record.chosen_score is None or record.rejected_score is None:
        return replace(record, swapped=None, score_diff=None, split=None, kept=False)
    if swap and record.chosen_score < record.rejected_score:
        record = replace(record, swapped=False).swapped_roles()
    else:
        record = replace(record, swapped=False)
    return replace(record, score_diff=record.chosen_score - record.rejected_score)


def assign_splits(diffs: list[float], splits: int) -> list[int]:
    """Split index per difference: rank (stable) * splits // count."""
    order = np.argsort(np.asarray(diffs, dtype=np.float64), kind="stable")
    result = [0] * len(diffs)
    for rank, position in enumerate(order):
        result[int(position)] = rank * splits // len(diffs)
    return result


def select(records: list[PairRecord], selection: Selection) -> list[PairRecord]:
    """Orient every record, assign splits to the scored ones and mark the kept ones (order kept)."""
    oriented = [orient(r, swap=selection.on_disagreement == "swap") for r in records]
    # "drop": CLIP disagrees with the h order, not a pair to learn from: no split, never kept
    scored = [i for i, r in enumerate(oriented) if r.score_diff is not None
              and not (selection.on_disagreement == "drop" and r.score_diff < 0)]
    split_of = dict(zip(scored, assign_splits([oriented[i].score_diff for i in scored], selection.splits)))
    out = []
    for i, record in enumerate(oriented):
        if i not in split_of:  # unscored (orient already marked it) or dropped
            out.append(record if record.score_diff is None else replace(record, split=None, kept=False))
            continue
        split = split_of[i]
        if selection.keep_splits is not None:
            kept = split in selection.keep_splits
        elif selection.keep_diff is not None:
            kept = selection.keep_diff[0] <= record.score_diff <= selection.keep_diff[1]
        else:
            kept = True
        out.append(replace(record, split=split, kept=kept))
    return out


def kept_ranges(records: list[PairRecord], selection: Selection) -> list[tuple[float, float]]:
    """Difference intervals that were kept: the given range, or each kept split's [min, max]."""
    if selection.keep_diff is not None:
        return [selection.keep_diff]
    wanted = selection.keep_splits if selection.keep_splits is not None else range(selection.splits)
    ranges = []
    for split in wanted:
        diffs = [r.score_diff for r in records if r.split == split]
        if diffs:
            ranges.append((min(diffs), max(diffs)))
    return ranges


def summarize(records: list[PairRecord], selection: Selection) -> dict[str, Any]:
    """Counts, swap rate, difference quantiles and per-split ranges of selected records."""
    scored = [r for r in records if r.score_diff is not None]
    diffs = np.asarray([r.score_diff for r in scored], dtype=np.float64)
    swaps = sum(bool(r.swapped) for r in scored)
    # pairs where CLIP disagreed with the generation's order (swapped, or dropped / ignored)
    disagreements = swaps + int((diffs < 0).sum())
    per_split = []
    for split in range(selection.splits):
        members = diffs[np.asarray([r.split == split for r in scored], dtype=bool)] if scored else diffs
        per_split.append({"split": split, "pairs": int(members.size),
                          "min_diff": float(members.min()) if members.size else None,
                          "max_diff": float(members.max()) if members.size else None})
    return {
        "pairs": len(records),
        "scored": len(scored),
        "unscored": len(records) - len(scored),
        "empty_response": sum(bool(empty_sides(r)) for r in records),  # of the unscored: dropped
        "swapped": swaps,
        "swap_rate": swaps / len(scored) if scored else None,
        "on_disagreement": selection.on_disagreement,
        "disagreements": disagreements,
        "kept": sum(bool(r.kept) for r in records),
        "diff_quantiles": {f"q{round(q * 100):02d}": float(np.quantile(diffs, q)) for q in QUANTILES} if scored else {},
        "splits": per_split,
        "kept_ranges": [list(r) for r in kept_ranges(records, selection)],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable report of ``summarize``'s result."""
    rate = "n/a" if summary["swap_rate"] is None else f"{summary['swap_rate']:.1%}"
    empty = summary.get("empty_response")  # summaries written before the count lack it
    unscored = f"{summary['unscored']}" + (f" ({empty} with an empty response (dropped))" if empty else "")
    lines = [
        f"pairs {summary['pairs']}: scored {summary['scored']}, unscored {unscored}, "
        f"swapped {summary['swapped']} ({rate}), kept {summary['kept']}",
    ]
    mode = summary.get("on_disagreement", "swap")  # summaries written before the modes existed
    if mode != "swap":
        lines.append(f"CLIP disagreed with the generation's order on {summary['disagreements']} pairs: "
                     + ("dropped" if mode == "drop" else "kept as generated (CLIP ignored)"))
    if summary["diff_quantiles"]:
        lines.append("score difference quantiles: " + "  ".join(
            f"{name}={value:.4f}" for name, value in summary["diff_quantiles"].items()))
    for s in summary["splits"]:
        if s["pairs"]:
            lines.append(f"  split {s['split']:>2}: {s['pairs']:>6} pairs, "
                         f"diff {s['min_diff']:.4f} .. {s['max_diff']:.4f}")
        else:
            lines.append(f"  split {s['split']:>2}: {s['pairs']:>6} pairs")
    if summary["kept_ranges"]:
        lines.append("kept differences: " + ", ".join(f"[{lo:.4f}, {hi:.4f}]" for lo, hi in summary["kept_ranges"]))
    return "\n".join(lines)
