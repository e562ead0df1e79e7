"""Trials: SIGKILL at each write point of generate and curate. The store left behind reads
correctly, and the rerun gives exactly the rows of an uninterrupted run, with no leftovers."""

from __future__ import annotations

import pytest

from judgefree.cli.main import main
from judgefree.store.pair_store import PAIRS, STAGING, PairStore
from judgefree.testing.holders import run_cli
from judgefree.testing.store_checks import assert_valid_store, rows

# (where, KILL_AT): the second shard is being written / staged but not committed / committed but
# not yet published into pairs/ / published while the old temp files are not yet cleared.
GENERATE_KILLS = {
    "inside a shard write": "judgefree.io:_write_all:3",
    "shard staged, manifest not replaced": "judgefree.store.pair_store:write_json_atomic:2",
    "manifest replaced, shard not published": "judgefree.store.pair_store:StoreWriter._publish:2",
    "inside the manifest write": "judgefree.io:_write_all:4",
}


@pytest.mark.parametrize("where", sorted(GENERATE_KILLS))
def test_generate_killed(tmp_path, generate_argv, uninterrupted, fake_engine, where):
    out = tmp_path / "pairs"
    killed = run_cli(generate_argv(out), kill_at=GENERATE_KILLS[where])
    assert killed.returncode == -9, killed.stderr
    store = assert_valid_store(out, settled=False)  # readable through its manifest as it is
    # chunk 1 holds two pairs, chunk 2 one (its other image is the corrupt one)
    assert len(store) == {"manifest replaced, shard not published": 3}.get(where, 2)
    assert rows(out) == rows(uninterrupted)[:len(store)]
    if where == "manifest replaced, shard not published":  # a listed shard still waits in .staging
        assert len(list((out / STAGING).iterdir())) == 1 and len(list((out / PAIRS).iterdir())) == 1
    assert main(generate_argv(out)) == 0
    assert_valid_store(out)
    assert rows(out) == rows(uninterrupted)


@pytest.fixture
def curate_argv(tiny_clip_files):
    config, weights = tiny_clip_files

    def argv(pairs, out, *extra):
        return ["curate", "--pairs", str(pairs), "--out", str(out), "--clip", str(config), "--clip-weights",
                str(weights), "--device", "cpu", "--chunk-size", "2", "--splits", "3", "--no-progress", *extra]
    return argv


def test_curate_killed_while_scoring(tmp_path, uninterrupted, curate_argv):
    whole, out = tmp_path / "whole", tmp_path / "curated"
    assert main(curate_argv(uninterrupted, whole)) == 0
    killed = run_cli(curate_argv(uninterrupted, out), kill_at="judgefree.curate.curation:write_json_atomic:2")
    assert killed.returncode == -9, killed.stderr
    assert not (out / "manifest.json").exists() and len(list((out / "scores").glob("part-*"))) == 2
    assert main(curate_argv(uninterrupted, out)) == 0
    assert_valid_store(out)
    assert rows(out) == rows(whole)


@pytest.mark.parametrize("where, kill_at, listed_new", [
    ("new shard staged, manifest not replaced", "judgefree.store.pair_store:write_json_atomic:1", False),
    ("manifest replaced, old shard removed, new one not published", "judgefree.store.pair_store:os.replace:4", True),
])
def test_curate_killed_while_replacing_the_curated_store(tmp_path, uninterrupted, curate_argv, where, kill_at,
                                                         listed_new):
    out, whole = tmp_path / "curated", tmp_path / "whole"
    assert main(curate_argv(uninterrupted, out, "--keep", "0")) == 0
    before = rows(out)
    assert main(curate_argv(uninterrupted, whole, "--keep", "2")) == 0
    killed = run_cli(curate_argv(uninterrupted, out, "--keep", "2"), kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr
    assert_valid_store(out, settled=False)
    assert rows(out) == (rows(whole) if listed_new else before)  # the old store or the new one, never a mix
    if not listed_new:  # the folder too still reads as the old store (the new shard waits in .staging)
        import pandas as pd

        assert pd.read_parquet(out / PAIRS)["pair_id"].tolist() == [row["pair_id"] for row in before]
        assert pd.read_parquet(out / PAIRS)["kept"].tolist() == [row["kept"] for row in before]
    assert main(curate_argv(uninterrupted, out, "--keep", "2")) == 0
    assert_valid_store(out)
    assert rows(out) == rows(whole)
    assert PairStore(out).settings["selection"]["keep_splits"] == [2]


def test_stale_temp_files_are_cleared_by_the_next_run(tmp_path, generate_argv, uninterrupted, curate_argv):
    out, curated = tmp_path / "pairs", tmp_path / "curated"
    assert main(generate_argv(out)) == 0
    assert main(curate_argv(out, curated)) == 0
    planted = [out / ".manifest.json.x1.tmp", out / PAIRS / ".shard-0.parquet.x2.tmp", out / STAGING / "shard-z.parquet",
               curated / "scores" / ".progress.json.x3.tmp", curated / ".histogram.png.x4.tmp"]
    for path in planted:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"left by a killed run")
    assert main(generate_argv(out)) == 0
    assert main(curate_argv(out, curated)) == 0
    assert [p for p in planted if p.exists()] == []
    assert_valid_store(out)
    assert_valid_store(curated)
    assert rows(out) == rows(uninterrupted)
