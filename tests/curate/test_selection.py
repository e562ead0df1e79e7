"""Swap / split / keep logic (curate/selection.py) on fixed scores."""

from __future__ import annotations

import random

import numpy as np
import pytest
from judgefree.testing.material import make_record

from judgefree.curate.selection import Selection, assign_splits, format_summary, orient, select, summarize


def test_orient_swaps_only_when_chosen_scores_lower():
    kept_order = orient(make_record(0, 0.8, 0.3))
    assert kept_order.swapped is False and kept_order.chosen_text == "chosen 0"
    assert kept_order.score_diff == pytest.approx(0.5)

    swapped = orient(make_record(1, 0.2, 0.9))
    assert swapped.swapped is True
    # every response field moved with its text
    assert (swapped.chosen_text, swapped.chosen_h, swapped.chosen_token_ids, swapped.chosen_cond_logprobs,
            swapped.chosen_finish_reason, swapped.chosen_score, swapped.chosen_segments) == (
        "rejected 1", 0.5, [21, 21], [-1.5, -2.0], "length", 0.9, 2)
    assert swapped.rejected_text == "chosen 1" and swapped.rejected_seed == 1
    assert swapped.score_diff == pytest.approx(0.7)

    tie = orient(make_record(2, 0.4, 0.4))
    assert tie.swapped is False and tie.score_diff == 0.0 and tie.chosen_text == "chosen 2"


def test_orient_leaves_unscored_pairs_undecided():
    record = orient(make_record(3, None, 0.4))
    assert record.swapped is None and record.score_diff is None and record.kept is False


@pytest.mark.parametrize("n, k", [(23, 10), (10, 10), (7, 10), (1, 3), (100, 1)])
def test_assign_splits_equal_sizes_in_rank_order(n, k, fresh_seed):
    rng = random.Random(fresh_seed)
    diffs = [rng.choice([0.0, 0.1, rng.random()]) for _ in range(n)]  # ties included
    splits = assign_splits(diffs, k)
    sizes = np.bincount(splits, minlength=k)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= 1 and len(sizes) == k
    # a larger difference never lands in a lower split
    for a in range(n):
        for b in range(n):
            if diffs[a] < diffs[b]:
                assert splits[a] <= splits[b]


def _records(scores):
    return [make_record(i, c, r) for i, (c, r) in enumerate(scores)]


def test_select_keeps_requested_split_and_marks_the_rest():
    rng = random.Random(0)
    scores = [(rng.random(), rng.random()) for _ in range(40)] + [(None, 0.3)]
    out = select(_records(scores), Selection(splits=4, keep_splits=(2,)))
    assert [r.pair_id for r in out] == [f"p{i}" for i in range(41)]  # stored order is kept
    scored = [r for r in out if r.score_diff is not None]
    assert len(scored) == 40 and all(r.score_diff >= 0 for r in scored)
    assert sorted(r.split for r in scored) == sorted([0] * 10 + [1] * 10 + [2] * 10 + [3] * 10)
    assert {r.pair_id for r in out if r.kept} == {r.pair_id for r in scored if r.split == 2}
    assert out[-1].split is None and out[-1].kept is False
    # split 2 holds the third quarter of the sorted differences
    ranked = sorted(r.score_diff for r in scored)
    assert sorted(r.score_diff for r in out if r.kept) == ranked[20:30]


def test_select_by_difference_range_and_default_keeps_all():
    out = select(_records([(0.9, 0.1), (0.5, 0.45), (0.2, 0.5), (0.3, 0.3)]), Selection(splits=2, keep_diff=(0.25, 0.5)))
    assert [r.kept for r in out] == [False, False, True, False]  # diffs 0.8, 0.05, 0.3 (swapped), 0
    assert out[2].swapped is True
    everything = select(_records([(0.9, 0.1), (None, None)]), Selection())
    assert [r.kept for r in everything] == [True, False]


@pytest.mark.parametrize("kwargs, message", [
    ({"splits": 0}, "splits"),
    ({"splits": 10, "keep_splits": (10,)}, "outside"),
    ({"keep_splits": (1,), "keep_diff": (0.0, 1.0)}, "not both"),
    ({"keep_diff": (0.5, 0.1)}, "LO <= HI"),
    ({"keep_diff": (float("nan"), 0.1)}, "finite"),
])
def test_selection_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Selection(**kwargs)


def test_summary_counts_rates_and_quantiles():
    scores = [(0.9, 0.1), (0.2, 0.5), (0.6, 0.5), (0.1, 0.7), (None, 0.2)]
    out = select(_records(scores), Selection(splits=2, keep_splits=(1,)))
    summary = summarize(out, Selection(splits=2, keep_splits=(1,)))
    diffs = [0.8, 0.3, 0.1, 0.6]
    assert (summary["pairs"], summary["scored"], summary["unscored"], summary["swapped"], summary["kept"]) == (5, 4, 1, 2, 2)
    assert summary["swap_rate"] == pytest.approx(0.5)
    assert summary["diff_quantiles"]["q50"] == pytest.approx(np.quantile(diffs, 0.5))
    assert summary["diff_quantiles"]["q00"] == pytest.approx(0.1) and summary["diff_quantiles"]["q100"] == pytest.approx(0.8)
    assert [s["pairs"] for s in summary["splits"]] == [2, 2]
    assert summary["kept_ranges"] == [[pytest.approx(0.6), pytest.approx(0.8)]]
    text = format_summary(summary)
    assert "swapped 2 (50.0%)" in text and "kept 2" in text and "split  1:" in text


def test_drop_mode_keeps_roles_and_drops_disagreeing_pairs():
    # diffs (chosen - rejected): +0.8, -0.3, +0.1, -0.6, unscored
    scores = [(0.9, 0.1), (0.2, 0.5), (0.6, 0.5), (0.1, 0.7), (None, 0.2)]
    selection = Selection(splits=2, on_disagreement="drop")
    out = select(_records(scores), selection)
    assert [r.swapped for r in out] == [False, False, False, False, None]
    assert [r.chosen_text for r in out[:4]] == ["chosen 0", "chosen 1", "chosen 2", "chosen 3"]
    # the two agreeing pairs alone are ranked: 0.1 -> split 0, 0.8 -> split 1
    assert [r.split for r in out] == [1, None, 0, None, None]
    assert [r.kept for r in out] == [True, False, True, False, False]
    summary = summarize(out, selection)
    assert (summary["swapped"], summary["disagreements"], summary["kept"]) == (0, 2, 2)
    assert summary["on_disagreement"] == "drop"


def test_ignore_mode_keeps_every_scored_pair_as_generated():
    scores = [(0.9, 0.1), (0.2, 0.5), (0.6, 0.5), (0.1, 0.7), (None, 0.2)]
    selection = Selection(splits=2, on_disagreement="ignore")
    out = select(_records(scores), selection)
    assert [r.chosen_text for r in out[:4]] == ["chosen 0", "chosen 1", "chosen 2", "chosen 3"]
    assert [r.score_diff for r in out[:4]] == pytest.approx([0.8, -0.3, 0.1, -0.6])
    # signed differences ranked: -0.6, -0.3 -> split 0; 0.1, 0.8 -> split 1
    assert [r.split for r in out] == [1, 0, 1, 0, None]
    assert [r.kept for r in out] == [True, True, True, True, False]
    summary = summarize(out, selection)
    assert (summary["swapped"], summary["disagreements"], summary["kept"]) == (0, 2, 4)


def test_selection_rejects_unknown_disagreement_mode():
    with pytest.raises(ValueError, match="on_disagreement must be one of swap, drop, ignore"):
        Selection(on_disagreement="flip")


def test_summary_text_names_the_disagreement_mode():
    scores = [(0.9, 0.1), (0.2, 0.5), (0.6, 0.5)]
    for mode, words in (("drop", "1 pairs: dropped"), ("ignore", "1 pairs: kept as generated")):
        selection = Selection(splits=1, on_disagreement=mode)
        assert words in format_summary(summarize(select(_records(scores), selection), selection))


def test_a_pair_with_an_empty_response_is_dropped_and_counted():
    """CLIP cannot score a response with no text (0 segments): the pair gets no split, is never
    kept, and the summary counts it apart from the pairs whose scoring failed."""
    import dataclasses

    scored = _records([(0.9, 0.1), (0.2, 0.5), (0.6, 0.5)])
    empty_rejected = dataclasses.replace(make_record(3, 0.7, None), rejected_segments=0)
    empty_both = dataclasses.replace(make_record(4, None, None), chosen_segments=0, rejected_segments=0)
    failed = dataclasses.replace(make_record(5, None, None), chosen_segments=None, rejected_segments=None)
    selection = Selection(splits=1)
    out = select(scored + [empty_rejected, empty_both, failed], selection)
    assert [(r.split, r.kept) for r in out[3:]] == [(None, False)] * 3
    summary = summarize(out, selection)
    assert (summary["scored"], summary["unscored"], summary["empty_response"]) == (3, 3, 2)
    assert "2 with an empty response (dropped)" in format_summary(summary)
    older = {k: v for k, v in summary.items() if k != "empty_response"}  # a summary stored before the count
    assert "empty response" not in format_summary(older)
