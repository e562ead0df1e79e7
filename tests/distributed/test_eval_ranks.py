"""`torchrun ... judgefree eval run` on the CPU (gloo, 2 processes, the fake engine): the ranks
split the questions and rank 0 merges their parts into one answers file, equal to one
process's; a rank killed mid-run keeps the answers it wrote, and the rerun answers the rest."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from judgefree.testing.holders import run_cli_here, run_torchrun

# Each test starts torchrun (2 Python processes importing torch): ~15-30 s on 2 busy cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_ranks")
    images = root / "images"
    images.mkdir()
    for i in range(1, 8):
        Image.new("RGB", (4, 4), (30 * i, 10, 200 - 20 * i)).save(images / f"COCO_val2014_{i:012d}.jpg")
    questions = root / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image_id": i, "question": f"Describe {i}."}) + "\n"
                                 for i in range(1, 8)))
    (root / "model").mkdir()
    single = root / "single.jsonl"
    done = run_cli_here(_argv(root, single))  # the one-process reference, in this process
    assert done.returncode == 0, done.stderr[-3000:]
    return root, single


def _argv(root, out):
    return ["eval", "run", "--model", str(root / "model"), "--questions", str(root / "q.jsonl"), "--images",
            str(root / "images"), "--out", str(out), "--device", "cpu", "--batch-size", "2"]


def _parts(out):
    return sorted(out.parent.glob(f"{out.name}.rank-*.jsonl"))


def test_two_ranks_write_one_answers_file(setup, tmp_path):
    root, single = setup
    out = tmp_path / "answers.jsonl"
    done = run_torchrun(_argv(root, out), 2, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("answered 7, already there 0, failed 0") == 1
    assert out.read_text() == single.read_text()
    assert not _parts(out)


def test_a_killed_rank_keeps_its_answers(setup, tmp_path):
    root, single = setup
    out = tmp_path / "answers.jsonl"
    # 4 batches of 2: rank 1 has batches 1 and 3, and dies before its second engine call.
    died = run_torchrun(_argv(root, out), 2, tmp_path,
                        kill_at="judgefree.testing.fake_engine:FakeEngine.generate:2", kill_rank=1)
    assert died.returncode != 0
    part = out.with_name(out.name + ".rank-1.jsonl")
    assert [r["question_id"] for r in map(json.loads, part.read_text().splitlines())] == [3, 4]
    resumed = run_cli_here(_argv(root, out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    answered = int(resumed.stdout.split("answered ")[1].split(",")[0])
    assert answered <= 5  # rank 1's two answers (and whatever rank 0 wrote) were kept
    assert sorted(out.read_text().splitlines()) == sorted(single.read_text().splitlines())
    assert not _parts(out)
