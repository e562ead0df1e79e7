"""`torchrun ... judgefree generate` on the CPU (gloo, 2 processes, the fake engine): the union
of the ranks' shards is the store one process writes, row for row; one rank killed mid-run
loses nothing it committed, and a rerun with another number of processes finishes the rest."""

from __future__ import annotations

import json
import shutil

import pytest

from judgefree.store.manifest import PARTS
from judgefree.testing.holders import run_cli, run_cli_here, run_torchrun
from judgefree.testing.material import write_corrupt_image, write_photo_files
from judgefree.testing.store_checks import assert_valid_store, rows

# Each test starts torchrun (2-3 Python processes importing torch): ~15-40 s on 2 busy cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranks")
    images = root / "images"
    write_photo_files(images)  # 6 photos
    write_corrupt_image(images / "02_zz_broken.png")
    for i in range(3):  # 10 images: 5 chunks of 2, so the ranks get 3 and 2
        shutil.copy(images / "00_astronaut.png", images / f"09_copy{i}.png")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    single = root / "single"
    done = run_cli_here(_argv(model, images, single))  # the one-process reference, in this process
    assert done.returncode == 0, done.stderr[-3000:]
    return root, model, images, single


def _argv(model, images, out):
    return ["generate", "--model", str(model), "--images", str(images), "--out", str(out), "--chunk-size", "2",
            "--device", "cpu", "--no-progress", "--seed", "3"]


def _by_image(path):
    return sorted(rows(path), key=lambda row: row["image"])


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_two_ranks_write_the_store_of_one_process(setup, tmp_path):
    _, model, images, single = setup
    out = tmp_path / "two"
    done = run_torchrun(_argv(model, images, out), 2, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "9 pairs generated, 0 already in" in done.stdout and "1 images skipped" in done.stdout
    assert done.stdout.count("pairs generated") == 1  # rank 0 reports for the job
    store = assert_valid_store(out)
    assert len(store) == 9
    assert rows(out) == rows(single)  # even in the same order: the fold lists shards chunk by chunk
    names = [p.name for p in store.shard_paths()]
    assert any("-r0-" in n for n in names) and any("-r1-" in n for n in names)  # both ranks worked
    assert not (out / PARTS).exists() or not list((out / PARTS).iterdir())  # folded into manifest.json
    assert [s["image"] for s in _manifest(out)["skipped"]] == [s["image"] for s in _manifest(single)["skipped"]]

    again = run_torchrun(_argv(model, images, out), 2, tmp_path)  # nothing left to do
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 pairs generated, 9 already in" in again.stdout
    assert _by_image(out) == _by_image(single)


def test_a_killed_rank_loses_nothing_committed(setup, tmp_path):
    _, model, images, single = setup
    out = tmp_path / "killed"
    # Rank 1's chunks are 1 and 3; it dies before its second engine call (after chunk 1 is committed).
    died = run_torchrun(_argv(model, images, out), 2, tmp_path,
                        kill_at="judgefree.testing.fake_engine:FakeEngine.generate_pairs:2", kill_rank=1)
    assert died.returncode != 0
    parts = sorted(p.name for p in (out / PARTS).iterdir() if p.suffix == ".json")
    assert "rank-1.json" in parts
    rank1 = json.loads((out / PARTS / "rank-1.json").read_text())
    assert rank1["shards"] and not rank1["done"]
    readable = assert_valid_store(out, settled=False)  # readers merge every rank's part
    committed = {row["image"] for row in rows(out)}
    assert len(readable) == len(committed) >= 2

    resumed = run_cli_here(_argv(model, images, out))  # one process finishes the job
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{9 - len(committed)} pairs generated, {len(committed)} already in" in resumed.stdout
    assert_valid_store(out)
    assert _by_image(out) == _by_image(single)
    assert not list((out / PARTS).glob("*.json"))


def test_a_rerun_with_more_ranks_resumes_a_single_process_store(setup, tmp_path):
    _, model, images, single = setup
    out = tmp_path / "grown"
    # One process stopped after its second chunk, then three ranks finish it.
    first = run_cli(_argv(model, images, out), kill_at="judgefree.testing.fake_engine:FakeEngine.generate_pairs:3")
    assert first.returncode != 0
    before = len(rows(out))
    assert before == 3  # chunk 1 holds the broken image
    done = run_torchrun(_argv(model, images, out), 3, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{9 - before} pairs generated, {before} already in" in done.stdout
    assert_valid_store(out)
    assert _by_image(out) == _by_image(single)


def test_an_unrelated_job_is_refused_on_every_rank(setup, tmp_path):
    from judgefree.testing.holders import hold_lock

    _, model, images, _ = setup
    out = tmp_path / "busy"
    with hold_lock(out):  # another run writes this store
        done = run_torchrun(_argv(model, images, out), 2, tmp_path, timeout=120)
    assert done.returncode != 0  # every rank stopped (none was left waiting at a barrier)
    assert done.stderr.count("is being written by another judgefree run") >= 2
    assert not (out / "manifest.json").exists()
