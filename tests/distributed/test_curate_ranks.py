"""`torchrun ... judgefree curate` on the CPU (gloo, 2 processes, a tiny open_clip): the ranks
split the CLIP scoring, the selection runs once on the union, and the curated store equals one
process's row for row; a rank killed mid-scoring keeps its saved scores for the rerun."""

from __future__ import annotations

import json
import shutil

import pytest

from judgefree.generation.driver import GenerationSettings, generate_store, list_images
from judgefree.testing.fake_engine import FakeEngine
from judgefree.testing.holders import run_cli_here, run_torchrun
from judgefree.testing.material import write_photo_files, write_test_clip
from judgefree.testing.store_checks import assert_valid_store, rows

# Each test starts torchrun (2-3 Python processes importing torch): ~15-40 s on 2 busy cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate_ranks")
    images = root / "images"
    write_photo_files(images)
    for i in range(3):  # 9 pairs: 5 chunks of 2
        shutil.copy(images / "01_chelsea.jpg", images / f"09_copy{i}.jpg")
    generate_store(FakeEngine(), list_images(images), root / "pairs",
                   GenerationSettings(model="fake", prompt="Describe image in detail."), progress=False)
    config, weights = write_test_clip(root / "clip")
    single = root / "single"
    # One process (in this one): one thread, as each rank (float sums depend on the threads).
    done = run_cli_here(_argv(root, config, weights, single))
    assert done.returncode == 0, done.stderr[-3000:]
    return root, config, weights, single


def _argv(root, config, weights, out):
    return ["curate", "--pairs", str(root / "pairs"), "--clip", str(config), "--clip-weights", str(weights),
            "--device", "cpu", "--out", str(out), "--no-progress", "--chunk-size", "2", "--splits", "3",
            "--keep", "2"]


def _summary(path):
    return json.loads((path / "manifest.json").read_text())["summary"]


def test_two_ranks_curate_as_one_process(setup, tmp_path):
    root, config, weights, single = setup
    out = tmp_path / "two"
    done = run_torchrun(_argv(root, config, weights, out), 2, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("curated store:") == 1 and "(9 pairs scored now" in done.stdout
    assert_valid_store(out)
    assert rows(out) == rows(single)  # same order: the selection ran once, over every pair
    assert _summary(out) == _summary(single)
    parts = sorted(p.name for p in (out / "scores").iterdir())
    assert "progress-r1.json" in parts and any(p.startswith("part-r1-") for p in parts)


def test_a_rank_killed_while_scoring_keeps_its_scores(setup, tmp_path):
    root, config, weights, single = setup
    out = tmp_path / "killed"
    died = run_torchrun(_argv(root, config, weights, out), 2, tmp_path,
                        kill_at="judgefree.curate.clip_score:ClipScorer.score_records:2", kill_rank=1)
    assert died.returncode != 0
    saved = json.loads((out / "scores" / "progress-r1.json").read_text())
    assert sum(part["rows"] for part in saved["parts"]) == 2  # rank 1's first chunk
    resumed = run_cli_here(_argv(root, config, weights, out))  # one process finishes the job
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    scored_now = int(resumed.stdout.split("(")[-1].split(" pairs scored now")[0])
    assert scored_now <= 9 - 2
    assert rows(out) == rows(single) and _summary(out) == _summary(single)
