"""``eval run`` logic with a small fake engine: question parsing, image lookup, greedy
requests, incremental atomic output, resuming, failed generations."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from PIL import Image

from judgefree.engine.types import Completion
from judgefree.evaluation.halbench import RunSettings, load_questions, pending_questions, run_benchmark


class FakeEngine:
    """Answers "caption of <prompt>"; stops by length when the prompt says so; can fail a
    request or crash after a number of calls to test resuming."""

    def __init__(self, crash_after_calls: int | None = None, fail_prompts: tuple[str, ...] = ()):
        self.requests: list = []
        self.calls = 0
        self.crash_after_calls = crash_after_calls
        self.fail_prompts = fail_prompts

    def generate(self, requests):
        if self.crash_after_calls is not None and self.calls >= self.crash_after_calls:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        self.requests.extend(requests)
        out = []
        for r in requests:
            failed = r.prompt in self.fail_prompts
            out.append(Completion(
                request_id=r.request_id, prompt=r.prompt, token_ids=[1, 2, 3], text=f"caption of {r.prompt}",
                h=0.0, finish_reason="error" if failed else ("length" if "long" in r.prompt else "stop"),
                cond_logprobs=[], logprobs=[], seed=r.seed, error="boom" if failed else None))
        return out


def write_questions(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def bench(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("COCO_val2014_000000000001.jpg", "000000000002.jpg", "3.png"):
        Image.new("RGB", (4, 4)).save(images / name)
    rows = [{"image_id": 1, "question": "Describe the image."},
            {"image_id": 2, "question": "Describe in long detail."},
            {"image_id": "3", "question": "What is there?"},
            {"image_id": 1, "question": "Anything else?"},
            {"image_id": 2, "question": "Last one."}]
    return write_questions(tmp_path / "questions.jsonl", rows), images


def test_load_questions_finds_coco_named_images(bench):
    questions_file, images = bench
    questions = load_questions(questions_file, images)
    assert [q.question_id for q in questions] == [0, 1, 2, 3, 4]  # line numbers when no question_id
    assert [q.image.name for q in questions[:3]] == [
        "COCO_val2014_000000000001.jpg", "000000000002.jpg", "3.png"]


def test_embedded_base64_images_and_file_names(tmp_path):
    buffer = io.BytesIO()
    Image.frombytes("RGB", (32, 32), os.urandom(32 * 32 * 3)).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()  # noise does not compress: > 1024 chars
    Image.new("RGB", (4, 4)).save(tmp_path / "pic.jpg")
    path = write_questions(tmp_path / "q.jsonl", [
        {"question_id": "a", "image_id": 5, "question": "Q?", "image": encoded},
        {"question_id": "b", "image_id": 6, "text": "Q2?", "image": "pic.jpg"}])
    a, b = load_questions(path, tmp_path)
    assert isinstance(a.image, bytes) and b.image == tmp_path / "pic.jpg"
    engine = FakeEngine()
    run_benchmark(engine, [a], tmp_path / "out.jsonl", RunSettings("m"), progress=False)
    assert engine.requests[0].image.size == (32, 32)  # decoded to a PIL image for the engine


@pytest.mark.parametrize("row, error, message", [
    ({"image_id": 9, "question": "Q"}, FileNotFoundError, "no image for image_id 9"),
    ({"image_id": 1, "question": "Q", "image": "gone.jpg"}, FileNotFoundError, "image 'gone.jpg' not found"),
    ({"image_id": 1, "question": "Q", "image": "!" * 2000}, ValueError, "neither a file name nor base64"),
    ({"image_id": 1}, ValueError, "has no question/text/prompt text"),
    ({"question": "Q"}, ValueError, "has no 'image_id'"),
])
def test_bad_questions(bench, tmp_path, row, error, message):
    _, images = bench
    with pytest.raises(error, match=message):
        load_questions(write_questions(tmp_path / "bad.jsonl", [row]), images)


def test_question_file_errors(bench, tmp_path):
    questions_file, images = bench
    dup = write_questions(tmp_path / "dup.jsonl", [{"question_id": 1, "image_id": 1, "question": "Q"}] * 2)
    with pytest.raises(ValueError, match="appears twice"):
        load_questions(dup, images)
    with pytest.raises(NotADirectoryError, match="--images"):
        load_questions(questions_file, tmp_path / "nope")
    with pytest.raises(ValueError, match="pass --images"):
        load_questions(questions_file, None)


def test_greedy_requests_and_output_records(bench, tmp_path):
    questions = load_questions(*bench)
    engine, out = FakeEngine(), tmp_path / "answers.jsonl"
    summary = run_benchmark(engine, questions, out, RunSettings("model-a", max_new_tokens=64, batch_size=2),
                            progress=False)
    assert (summary.generated, summary.skipped, summary.failed) == (5, 0, [])
    assert engine.calls == 3  # batches of 2, 2, 1
    first = engine.requests[0]
    assert first.sampling.temperature == 0 and first.max_new_tokens == 64 and first.h == 0.0
    assert first.image == questions[0].image and first.request_id == "0"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0] == {
        "question_id": 0, "image_id": 1, "question": "Describe the image.",
        "caption": "caption of Describe the image.", "finish_reason": "stop", "truncated": False,
        "num_tokens": 3, "model": "model-a", "temperature": 0.0, "max_new_tokens": 64}
    assert rows[1]["truncated"] is True and rows[1]["finish_reason"] == "length"


def test_resume_after_crash_skips_answered_questions(bench, tmp_path):
    questions = load_questions(*bench)
    out, settings = tmp_path / "answers.jsonl", RunSettings("m", batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(FakeEngine(crash_after_calls=1), questions, out, settings, progress=False)
    assert len(out.read_text().splitlines()) == 2  # the first batch was written before the crash
    engine = FakeEngine()
    summary = run_benchmark(engine, questions, out, settings, progress=False)
    assert [r.request_id for r in engine.requests] == ["2", "3", "4"]
    assert (summary.generated, summary.skipped) == (3, 2)
    assert [json.loads(line)["question_id"] for line in out.read_text().splitlines()] == [0, 1, 2, 3, 4]
    assert pending_questions(questions, out, settings)[1] == []


def test_failed_requests_are_reported_not_written_and_retried(bench, tmp_path):
    questions = load_questions(*bench)
    out = tmp_path / "answers.jsonl"
    summary = run_benchmark(FakeEngine(fail_prompts=("What is there?",)), questions, out, RunSettings("m"),
                            progress=False)
    assert summary.failed == [(2, "boom")] and summary.generated == 4
    engine = FakeEngine()
    run_benchmark(engine, questions, out, RunSettings("m"), progress=False)
    assert [r.prompt for r in engine.requests] == ["What is there?"]


def test_resume_refuses_answers_made_with_other_settings(bench, tmp_path):
    questions = load_questions(*bench)
    out = tmp_path / "answers.jsonl"
    run_benchmark(FakeEngine(), questions[:1], out, RunSettings("model-a"), progress=False)
    with pytest.raises(ValueError, match="with model 'model-a', not 'model-b'"):
        run_benchmark(FakeEngine(), questions, out, RunSettings("model-b"), progress=False)
    # Another token limit or temperature would mix two kinds of answers in one file.
    with pytest.raises(ValueError, match="with max_new_tokens 512, not 64"):
        run_benchmark(FakeEngine(), questions, out, RunSettings("model-a", max_new_tokens=64), progress=False)
    with pytest.raises(ValueError, match="with temperature 0.0, not 0.7"):
        run_benchmark(FakeEngine(), questions, out, RunSettings("model-a", temperature=0.7), progress=False)
    assert len(out.read_text().splitlines()) == 1  # nothing was added


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"batch_size": 0}, {"temperature": -1.0}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RunSettings("m", **kwargs)


def test_engine_returning_the_wrong_count_or_order(bench, tmp_path):
    questions = load_questions(*bench)

    class Short(FakeEngine):
        def generate(self, requests):
            return super().generate(requests)[:-1]

    class Swapped(FakeEngine):
        def generate(self, requests):
            return super().generate(requests)[::-1]

    with pytest.raises(RuntimeError, match="2 completions for 3 requests"):
        run_benchmark(Short(), questions, tmp_path / "a.jsonl", RunSettings("m", batch_size=3), progress=False)
    with pytest.raises(RuntimeError, match="keep the requests' order"):
        run_benchmark(Swapped(), questions, tmp_path / "b.jsonl", RunSettings("m", batch_size=3), progress=False)
