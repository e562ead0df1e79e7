"""``judgefree eval chair | run | compare`` through the CLI entry point.

The parser is built with only the ``eval`` subcommand so these tests do not depend on the
state of the other subcommands' modules.
"""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

import judgefree.cli.main as cli
from judgefree.engine.types import Completion
from judgefree.evaluation import halbench

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}]
IMAGES = [{"id": 1}, {"id": 2}]
REAL_SUBCOMMANDS = cli.SUBCOMMANDS  # read before the fixture below narrows it


@pytest.fixture(autouse=True)
def eval_only(monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("eval",))


@pytest.fixture
def coco(tmp_path):
    # image 1: a dog (instances) and a man (reference caption); image 2: a cat.
    folder = tmp_path / "coco"
    folder.mkdir()
    (folder / "instances_val2014.json").write_text(json.dumps({
        "images": IMAGES, "categories": CATEGORIES,
        "annotations": [{"image_id": 1, "category_id": 18}, {"image_id": 2, "category_id": 17}]}))
    (folder / "captions_val2014.json").write_text(json.dumps({
        "images": IMAGES, "annotations": [{"image_id": 1, "caption": "A man and his dog."}]}))
    return folder


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_is_a_registered_subcommand():
    assert "eval" in REAL_SUBCOMMANDS


def test_chair_prints_metrics_and_writes_detail(coco, tmp_path, capsys):
    captions = write_jsonl(tmp_path / "seed.jsonl", [
        {"question_id": 1, "image_id": 1, "caption": "A man with two dogs and a cat."},  # cat hallucinated
        {"question_id": 2, "image_id": 2, "caption": "A kitten sleeps. A dog bar", "finish_reason": "length"},
    ])
    assert cli.main(["eval", "chair", "--captions", str(captions), "--coco-annotations", str(coco)]) == 0
    out = capsys.readouterr().out
    # mentions: man, dog, cat | kitten, dog (whole captions, the default): 5, 2 hallucinated
    assert "CHAIRs 100.0%  CHAIRi 40.0%  recall 100.0%" in out
    assert "(chair: 2 captions, 5 object mentions, 2 hallucinated, 1 truncated)" in out and "note:" not in out
    result = json.loads((tmp_path / "seed.chair.json").read_text())
    assert result["metrics"]["hallucinated_mentions"] == 2
    assert result["captions"][0]["hallucinated"] == [["cat", "cat"]]
    # the option drops the truncated "A dog bar" and reports both: 4 mentions, 1 hallucinated
    assert cli.main(["eval", "chair", "--captions", str(captions), "--coco-annotations", str(coco),
                     "--drop-unfinished-sentence"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("unfinished sentences dropped: CHAIRs 50.0%  CHAIRi 25.0%  recall 100.0%")
    assert lines[1].startswith("whole captions:               CHAIRs 100.0%  CHAIRi 40.0%")
    result = json.loads((tmp_path / "seed.chair.json").read_text())
    assert result["metrics"]["hallucinated_mentions"] == 1 and result["metrics_whole_captions"]["chair_s"] == 1.0


def test_chair_halbench_protocol_says_what_it_cannot_do(coco, tmp_path, capsys):
    captions = write_jsonl(tmp_path / "seed.jsonl", [
        {"question_id": 1, "image_id": 1, "caption": "A man with two dogs and another dog."},
        {"question_id": 2, "image_id": 2, "caption": "An empty room with white walls."},
    ])
    assert cli.main(["eval", "chair", "--captions", str(captions), "--coco-annotations", str(coco),
                     "--protocol", "halbench"]) == 0
    out = capsys.readouterr().out
    # response 1: man, dog (once); response 2 names no object and is not in the CHAIRs denominator
    assert "CHAIRs 0.0%  CHAIRi 0.0%  recall 66.7%" in out
    assert "(halbench: 1 of 2 responses name an object, 2 object mentions" in out
    assert "note: protocol halbench: RLHF-V's Object HalBench extracts each response's objects with GPT-3.5, " \
        "which cannot run offline" in out
    assert json.loads((tmp_path / "seed.chair.json").read_text())["notes"][0].startswith("protocol halbench")


def test_chair_bad_input_is_one_line_exit_2(coco, tmp_path, capsys):
    captions = write_jsonl(tmp_path / "c.jsonl", [{"image_id": 1, "caption": "A dog."}])
    code = cli.main(["eval", "chair", "--captions", str(captions), "--coco-annotations", str(tmp_path / "no")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"judgefree eval: error: --coco-annotations is not a folder: {tmp_path / 'no'}"


class FakeEngine:
    def __init__(self):
        self.prompts = []

    def generate(self, requests):
        self.prompts += [r.prompt for r in requests]
        return [Completion(request_id=r.request_id, prompt=r.prompt, token_ids=[7], text="A dog and a cat.",
                           h=0.0, finish_reason="stop", cond_logprobs=[], logprobs=[]) for r in requests]


def test_run_resumes_and_then_chair_scores_it(coco, tmp_path, monkeypatch, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2):
        Image.new("RGB", (4, 4)).save(images / f"COCO_val2014_{i:012d}.jpg")
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": i, "image_id": i, "question": "Describe."}
                                                    for i in (1, 2)])
    model = tmp_path / "model"
    model.mkdir()
    loads = []
    engine = FakeEngine()
    monkeypatch.setattr(halbench, "load_engine", lambda *a, **k: loads.append((a, k)) or engine)
    out = tmp_path / "answers.jsonl"
    argv = ["eval", "run", "--model", str(model), "--questions", str(questions), "--images", str(images),
            "--out", str(out), "--dtype", "float32", "--device", "cpu"]
    assert cli.main(argv) == 0
    assert loads == [((str(model),), {"dtype": "float32", "device": "cpu"})]
    assert "answered 2, already there 0, failed 0" in capsys.readouterr().out
    assert cli.main(argv) == 0  # everything answered: the model is not even loaded
    assert len(loads) == 1 and "all 2 questions already answered" in capsys.readouterr().out
    assert cli.main(["eval", "chair", "--captions", str(out), "--coco-annotations", str(coco)]) == 0
    # image 1: dog ok, cat hallucinated; image 2: dog hallucinated, cat ok
    assert "CHAIRs 100.0%  CHAIRi 50.0%  recall 66.7%" in capsys.readouterr().out


def test_run_missing_model_folder(tmp_path, capsys):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"image_id": 1, "question": "Q", "image": "x.jpg"}])
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
    code = cli.main(["eval", "run", "--model", str(tmp_path / "none"), "--questions", str(questions),
                     "--images", str(tmp_path), "--out", str(tmp_path / "a.jsonl")])
    assert code == 2 and "--model folder not found" in capsys.readouterr().err


def test_compare_results_and_captions_side_by_side(coco, tmp_path, capsys):
    seed = write_jsonl(tmp_path / "seed.jsonl", [
        {"image_id": 1, "caption": "A man, a dog and a cat."}, {"image_id": 2, "caption": "A cat and a dog."}])
    improved = write_jsonl(tmp_path / "improved.jsonl", [
        {"image_id": 1, "caption": "A man and a dog."}, {"image_id": 2, "caption": "A cat."}])
    assert cli.main(["eval", "chair", "--captions", str(seed), "--coco-annotations", str(coco)]) == 0
    capsys.readouterr()
    # A result JSON against a captions file scored on the spot.
    assert cli.main(["eval", "compare", str(tmp_path / "seed.chair.json"), str(improved),
                     "--names", "seed", "improved", "--coco-annotations", str(coco)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", "seed", "improved", "change"]
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line) for line in lines[2:])}
    assert rows["CHAIRs (%)"] == ["100.0", "0.0", "-100.0 (better)"]
    assert rows["CHAIRi (%)"] == ["40.0", "0.0", "-40.0 (better)"]
    assert rows["Recall (%)"] == ["100.0", "100.0", "+0.0"]
    assert rows["object mentions"] == ["5", "3", "-2"]


def test_compare_refuses_results_of_different_protocols(coco, tmp_path, capsys):
    seed = write_jsonl(tmp_path / "seed.jsonl", [{"image_id": 1, "caption": "A man and a dog."}])
    assert cli.main(["eval", "chair", "--captions", str(seed), "--coco-annotations", str(coco)]) == 0
    assert cli.main(["eval", "chair", "--captions", str(seed), "--coco-annotations", str(coco),
                     "--protocol", "halbench", "--out", str(tmp_path / "hb.json")]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "compare", str(tmp_path / "seed.chair.json"), str(tmp_path / "hb.json")]) == 2
    assert "differ in protocol (seed.chair: chair, hb: halbench)" in capsys.readouterr().err


def test_compare_captions_without_annotations_is_an_error(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"image_id": 1, "caption": "x"}])
    assert cli.main(["eval", "compare", str(a), str(a)]) == 2
    assert "pass --coco-annotations" in capsys.readouterr().err


def test_eval_without_action_prints_help(capsys):
    assert cli.main(["eval"]) == 0
    assert "chair" in capsys.readouterr().out
