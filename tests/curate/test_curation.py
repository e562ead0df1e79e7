"""The curation driver (curate/curation.py): a generated store of real photos scored by a tiny
CLIP, swapped, split, kept; resume after an interruption; histogram; bad outputs refused."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from judgefree.testing.fake_engine import FakeEngine
from judgefree.testing.material import SETTINGS
from PIL import Image

from judgefree.curate.curation import curate_store
from judgefree.generation.driver import generate_store, list_images
from judgefree.curate.histogram import KEPT_BAR, render_histogram
from judgefree.curate.selection import Selection, summarize
from judgefree.store.pair_store import PairStore, StoreWriter

CLIP = {"model": "tiny", "weights": "tiny.safetensors", "kind": "clipscore", "quick_gelu": None}


@pytest.fixture
def generated(tmp_path, photos_with_corrupt):
    generate_store(FakeEngine(), list_images(photos_with_corrupt), tmp_path / "pairs", SETTINGS,
                   chunk_size=4, progress=False)
    return tmp_path / "pairs"


class Interrupt(Exception):
    pass


def _stop(index: int) -> None:
    if index == 1:
        raise Interrupt


def test_curated_store_is_scored_oriented_split_and_kept(generated, tmp_path, tiny_scorer):
    selection = Selection(splits=3, keep_splits=(2,))
    report = curate_store(generated, tmp_path / "cur", tiny_scorer, selection, clip_settings=CLIP, progress=False)
    source = list(PairStore(generated).records())
    curated = list(PairStore(tmp_path / "cur").records())
    assert [r.pair_id for r in curated] == [r.pair_id for r in source] and len(curated) == 6
    raw = {s.pair_id: s for s in tiny_scorer.score_records(source)}
    for before, after in zip(source, curated):
        score = raw[before.pair_id]
        swap = score.chosen_score < score.rejected_score
        assert after.swapped is swap
        assert after.chosen_text == (before.rejected_text if swap else before.chosen_text)
        assert after.chosen_cond_logprobs == (before.rejected_cond_logprobs if swap else before.chosen_cond_logprobs)
        assert after.chosen_score == pytest.approx(max(score.chosen_score, score.rejected_score), abs=1e-6)
        assert after.score_diff == pytest.approx(abs(score.chosen_score - score.rejected_score), abs=1e-6)
        assert after.score_diff == pytest.approx(after.chosen_score - after.rejected_score)
    ranked = sorted(curated, key=lambda r: r.score_diff)
    assert [r.split for r in ranked] == [0, 0, 1, 1, 2, 2]
    assert {r.pair_id for r in PairStore(tmp_path / "cur").records(kept_only=True)} == {r.pair_id for r in ranked[4:]}
    manifest = PairStore(tmp_path / "cur").manifest
    assert manifest["summary"] == json.loads(json.dumps(summarize(curated, selection)))
    assert manifest["summary"]["swapped"] == sum(r.swapped for r in curated)
    assert manifest["settings"]["generation"] == PairStore(generated).settings
    with Image.open(report.histogram) as png:
        assert png.format == "PNG" and png.size == (900, 520)


def test_resume_after_interruption_equals_an_uninterrupted_run(generated, tmp_path, tiny_scorer):
    selection = Selection(splits=2)
    curate_store(generated, tmp_path / "whole", tiny_scorer, selection, clip_settings=CLIP, chunk_size=2, progress=False)
    with pytest.raises(Interrupt):
        curate_store(generated, tmp_path / "resumed", tiny_scorer, selection, clip_settings=CLIP, chunk_size=2,
                     progress=False, after_chunk=_stop)
    assert not (tmp_path / "resumed" / "manifest.json").exists()  # no curated store until scoring is complete
    report = curate_store(generated, tmp_path / "resumed", tiny_scorer, selection, clip_settings=CLIP, chunk_size=2,
                          progress=False)
    assert report.newly_scored == 2  # 6 pairs, 2 chunks of 2 were saved before the interruption
    whole = list(PairStore(tmp_path / "whole").records())
    resumed = list(PairStore(tmp_path / "resumed").records())
    for a, b in zip(whole, resumed, strict=True):
        a_row, b_row = a.to_row(), b.to_row()
        for name in ("chosen_score", "rejected_score", "score_diff"):
            assert b_row.pop(name) == pytest.approx(a_row.pop(name), abs=1e-6)
        assert a_row == b_row


def test_rerun_reselects_without_rescoring_and_guards_the_clip(generated, tmp_path, tiny_scorer):
    out = tmp_path / "cur"
    curate_store(generated, out, tiny_scorer, Selection(splits=2), clip_settings=CLIP, progress=False)
    first = {r.pair_id: r.score_diff for r in PairStore(out).records()}
    report = curate_store(generated, out, tiny_scorer, Selection(splits=3, keep_diff=(0.0, 0.05)),
                          clip_settings=CLIP, progress=False)
    assert report.newly_scored == 0
    again = list(PairStore(out).records())
    assert {r.pair_id: r.score_diff for r in again} == first
    assert [r.kept for r in again] == [r.score_diff <= 0.05 for r in again]
    assert len(list((out / "pairs").glob("shard-*.parquet"))) == 1  # the replaced store's shard was removed
    with pytest.raises(ValueError, match="other settings"):
        curate_store(generated, out, tiny_scorer, Selection(), clip_settings={**CLIP, "kind": "cosine"}, progress=False)


def test_stored_scores_are_reused_only_for_unchanged_pairs(generated, tmp_path, tiny_scorer):
    """A generated store rebuilt with the same settings but another response (e.g. a changed
    model in the same folder) keeps its pair ids: that pair must be scored afresh."""
    out = tmp_path / "cur"
    curate_store(generated, out, tiny_scorer, Selection(splits=2), clip_settings=CLIP, progress=False)
    source = PairStore(generated)
    records = list(source.records())
    records[2] = dataclasses.replace(records[2], chosen_text="An entirely different answer. It names a zebra.")
    StoreWriter(generated, stage="generated", settings=source.settings, overwrite=True).append(records)
    report = curate_store(generated, out, tiny_scorer, Selection(splits=2), clip_settings=CLIP, progress=False)
    assert report.newly_scored == 1
    fresh = {s.pair_id: s for s in tiny_scorer.score_records(records)}
    for record in PairStore(out).records():
        want = fresh[record.pair_id]
        assert sorted([record.chosen_score, record.rejected_score]) == pytest.approx(
            sorted([want.chosen_score, want.rejected_score]), abs=1e-6)


def test_image_gone_before_curation_is_skipped_and_listed(tmp_path, photo_dir, tiny_scorer):
    images_dir = tmp_path / "images"
    shutil.copytree(photo_dir, images_dir)
    generate_store(FakeEngine(), list_images(images_dir), tmp_path / "pairs", SETTINGS, progress=False)
    victim = sorted(images_dir.iterdir())[1]
    victim.unlink()
    report = curate_store(tmp_path / "pairs", tmp_path / "cur", tiny_scorer, Selection(splits=2), clip_settings=CLIP,
                          progress=False)
    assert [s["image"] for s in report.skipped] == [str(victim)]
    assert PairStore(tmp_path / "cur").skipped == report.skipped
    lost = [r for r in PairStore(tmp_path / "cur").records() if r.image == str(victim)][0]
    assert lost.chosen_score is None and lost.split is None and lost.kept is False
    assert report.summary["unscored"] == 1 and report.summary["scored"] == len(list(images_dir.iterdir()))


def test_a_pair_with_an_empty_response_is_dropped_counted_and_listed(generated, tmp_path, tiny_scorer):
    source = PairStore(generated)
    records = list(source.records())
    records[1] = dataclasses.replace(records[1], rejected_text="")  # the engine stopped at once
    records[3] = dataclasses.replace(records[3], chosen_text=" \n ")
    with StoreWriter(generated, stage="generated", settings=source.settings, overwrite=True) as writer:
        writer.append(records)
    out = tmp_path / "cur"
    report = curate_store(generated, out, tiny_scorer, Selection(splits=2), clip_settings=CLIP, progress=False)
    assert report.summary["empty_response"] == 2
    assert report.summary["scored"] == len(records) - len(report.skipped)  # the two, and any failed image
    empty = [e for e in report.skipped if "empty" in e["reason"]]
    assert [e["pair_id"] for e in empty] == [records[1].pair_id, records[3].pair_id]
    assert "rejected" in empty[0]["reason"] and "chosen" in empty[1]["reason"]
    by_id = {r.pair_id: r for r in PairStore(out).records()}
    for record in (records[1], records[3]):
        stored = by_id[record.pair_id]
        assert stored.kept is False and stored.split is None and stored.swapped is None
    assert PairStore(out).manifest["summary"]["empty_response"] == 2
    # A rerun reuses the stored scores and reports the same.
    again = curate_store(generated, out, tiny_scorer, Selection(splits=2), clip_settings=CLIP, progress=False)
    assert again.newly_scored == 0 and again.summary["empty_response"] == 2
    assert [e for e in again.skipped if "empty" in e["reason"]] == empty


def test_bad_inputs_and_outputs_are_refused(generated, tmp_path, tiny_scorer):
    with pytest.raises(ValueError, match="--out must differ"):
        curate_store(generated, generated, tiny_scorer, Selection(), clip_settings=CLIP)
    shutil.copytree(generated, tmp_path / "other")  # a generated store where the curated one would go
    with pytest.raises(ValueError, match="not a curated one"):
        curate_store(generated, tmp_path / "other", tiny_scorer, Selection(), clip_settings=CLIP)
    curate_store(generated, tmp_path / "cur", tiny_scorer, Selection(), clip_settings=CLIP, progress=False)
    with pytest.raises(ValueError, match="curate a generated one"):
        curate_store(tmp_path / "cur", tmp_path / "cur2", tiny_scorer, Selection(), clip_settings=CLIP)
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        curate_store(tmp_path / "nowhere", tmp_path / "cur3", tiny_scorer, Selection(), clip_settings=CLIP)


def test_histogram_marks_kept_range(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    diffs = rng.gamma(2.0, 0.05, size=300).tolist()
    lo, hi = np.quantile(diffs, [0.4, 0.6])

    def green_pixels(image: Image.Image) -> int:
        return int((np.asarray(image) == np.asarray(KEPT_BAR, dtype=np.uint8)).all(-1).sum())

    marked = render_histogram(diffs, [(float(lo), float(hi))])
    assert green_pixels(marked) > 100
    assert green_pixels(render_histogram(diffs, [])) == 0
    columns = np.nonzero((np.asarray(marked) == np.asarray(KEPT_BAR, dtype=np.uint8)).all(-1).any(0))[0]
    width = 900 - 80 - 30
    span = (hi - lo) / (max(diffs) - min(diffs)) * width
    assert columns.max() - columns.min() <= span + 2 * width / 40  # green only around the kept range
    assert render_histogram([], []).size == (900, 520)  # no scored pairs: a labelled empty figure
    assert render_histogram([0.2] * 5, [(0.2, 0.2)]).size == (900, 520)  # all equal: no division by zero
