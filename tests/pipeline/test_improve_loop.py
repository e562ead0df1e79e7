"""The self-improvement loop on the tiny LLaVA and a tiny random CLIP: two rounds, each starting
from the previous round's model, with CHAIR evaluation; a rerun skips every finished stage;
changed settings are refused. Plus the ``judgefree improve`` command's argument checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from judgefree.testing.material import write_test_clip

import judgefree.cli.main as cli
from judgefree.curate.clip_score import ClipConfig
from judgefree.generation.driver import GenerationSettings
from judgefree.curate.selection import Selection
from judgefree.store.pair_store import PairStore
from judgefree.engine.types import SamplingParams
from judgefree.train.config import TrainConfig
from judgefree.pipeline.loop import EvalSettings, Loop, LoopSettings


def _coco(folder: Path, photos: list[str]) -> tuple[Path, Path]:
    """Two questions on two of the photos, and COCO annotations saying what is in them."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]
    categories = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}]
    (folder / "instances_val2014.json").write_text(json.dumps({
        "images": images, "categories": categories,
        "annotations": [{"id": 0, "image_id": 1, "category_id": 1}, {"id": 1, "image_id": 2, "category_id": 17}]}))
    (folder / "captions_val2014.json").write_text(json.dumps({
        "images": images, "annotations": [{"id": 0, "image_id": 1, "caption": "A person in a suit."}]}))
    questions = folder / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": f"q{i}", "image_id": i + 1, "image": photos[i],
                                             "question": "Describe the image."}) + "\n" for i in range(2)))
    return questions, folder


def _settings(model, photos, out, tmp_path, **changes) -> LoopSettings:
    clip_config, clip_weights = write_test_clip(tmp_path / "clip")
    questions, coco = _coco(tmp_path / "coco", photos)
    settings = dict(
        model=str(model), images=photos[:3], out=str(out), rounds=2, chunk_size=2,
        generation=GenerationSettings(model="", prompt="Describe the image.", h_rejected="fixed:0.8",
                                      sampling=SamplingParams(temperature=1.0), max_new_tokens=6, seed=1),
        clip=ClipConfig(model=str(clip_config), weights=str(clip_weights), device="cpu"),
        selection=Selection(splits=1),
        train=TrainConfig(finetune="lora", learning_rate=1e-2, epochs=2, batch_size=2, micro_batch_size=2,
                          warmup_ratio=0.0, save_every=100),
        evaluation=EvalSettings(str(questions), str(coco), max_new_tokens=6, batch_size=2),
        dtype="float32", device="cpu", progress=False)
    return LoopSettings(**{**settings, **changes})


def test_two_rounds_chain_models_evaluate_and_resume(train_llava_dir, train_photos, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    lines: list[str] = []
    reports = Loop(_settings(train_llava_dir, train_photos, out, tmp_path), log=lines.append).run()
    assert [r.round for r in reports] == [1, 2]
    first, second = reports
    assert second.model_in == first.model_out == str(out / "round-1" / "train" / "model")
    for k in (1, 2):
        for stage in ("generate", "curate", "train", "evaluate"):
            assert (out / f"round-{k}" / f"{stage}.done").is_file()
    assert (out / "round-0" / "evaluate.done").is_file() and (out / "round-0" / "eval" / "chair.json").is_file()
    round2 = PairStore(out / "round-2" / "pairs")
    assert round2.settings["model"] == first.model_out and round2.settings["seed"] == 2  # m1 generates round 2
    assert len(PairStore(out / "round-2" / "curated")) == 3
    assert second.stages["train"]["steps"] == 2 and "metrics" in second.stages["evaluate"]
    assert Path(second.model_out, "model.safetensors").is_file()

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    import judgefree.curate.clip_score as clip_score
    import judgefree.engine as engine
    import judgefree.train.trainer as trainer

    monkeypatch.setattr(engine.Engine, "from_pretrained", forbidden)
    monkeypatch.setattr(clip_score.ClipScorer, "load", forbidden)
    monkeypatch.setattr(trainer, "train_dpo", forbidden)
    again = Loop(_settings(train_llava_dir, train_photos, out, tmp_path), log=lines.append).run()
    assert all(stage["skipped"] for report in again for stage in report.stages.values())
    assert sum("already done" in line for line in lines) == 9  # 2 rounds x 4 stages + the seed evaluation

    with pytest.raises(ValueError, match="generation"):
        Loop(_settings(train_llava_dir, train_photos, out, tmp_path,
                       generation=GenerationSettings(model="", prompt="Another prompt."))).run()
    # Evaluation may be added on a rerun, but finished evaluations are never reused for other settings.
    questions, coco = _coco(tmp_path / "coco", train_photos)
    longer = EvalSettings(str(questions), str(coco), max_new_tokens=12, batch_size=2)
    with pytest.raises(ValueError, match="evaluate was done with other settings"):
        Loop(_settings(train_llava_dir, train_photos, out, tmp_path, evaluation=longer), log=lines.append).run()


@pytest.fixture
def improve_only(monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("improve",))


def test_improve_is_a_registered_subcommand():
    assert "improve" in cli.SUBCOMMANDS


@pytest.mark.parametrize("argv, message", [
    (["improve", "--demo", "--rounds", "2"], "--demo takes no other arguments"),
    (["improve", "--images", "x"], "--model and --images are required"),
    (["improve", "--model", "/nonexistent/model", "--images", "x"], "no Hugging Face model folder"),
])
def test_improve_argument_errors_are_one_line(improve_only, capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_improve_checks_evaluation_inputs_before_loading_anything(improve_only, train_llava_dir, tmp_path, capsys):
    argv = ["improve", "--model", str(train_llava_dir), "--images", str(tmp_path), "--eval-questions", "q.jsonl"]
    assert cli.main(argv) == 2
    assert "needs both --eval-questions and --coco-annotations" in capsys.readouterr().err


def test_the_curate_marker_and_rounds_json_count_the_pairs_dropped_for_an_empty_response(tmp_path, monkeypatch):
    """curate.done carries curation's ``unscored`` and ``empty_response`` counts, and the world
    demo's rounds.json entry (``round_entry``) carries them on: a reader sees the dropped pairs."""
    import dataclasses
    from types import SimpleNamespace

    import judgefree.curate.clip_score as clip_score
    import judgefree.curate.curation as curation
    from judgefree.curate.selection import select, summarize
    from judgefree.pipeline.demo import round_entry
    from judgefree.pipeline.loop import RoundReport
    from judgefree.testing.material import make_record

    records = [make_record(0, 0.9, 0.1), make_record(1, 0.6, 0.5),
               dataclasses.replace(make_record(2, None, 0.5), chosen_text=" . ", chosen_segments=0),  # dropped
               make_record(3, None, None)]  # unscored: an unreadable image
    selection = Selection(splits=1)
    summary = summarize(select(records, selection), selection)  # curation's own counts
    monkeypatch.setattr(clip_score.ClipScorer, "load", lambda config: None)
    monkeypatch.setattr(curation, "curate_store", lambda pairs, out, scorer, selection, **kwargs: curation.CurationReport(
        Path(out), summary, Path(out) / "histogram.png", [], 0, 0.0))
    loop = Loop(LoopSettings(model=str(tmp_path), images=["a.png"], out=str(tmp_path / "runs"), selection=selection))
    marker = loop._curate(tmp_path / "pairs", tmp_path / "curated")
    assert (marker["pairs"], marker["scored"], marker["unscored"], marker["empty_response"], marker["kept"]) == \
        (4, 2, 2, 1, 2)
    report = RoundReport(1, "m0", "m1", {"curate": marker, "train": {"steps": 1}})
    metrics = SimpleNamespace(to_json=lambda: {"chair_i": 0.1})
    entry = round_entry(1, Path("m1"), metrics, report, SimpleNamespace(to_json=lambda: {"pairs": 2}))
    assert (entry["pairs"], entry["unscored"], entry["empty_response"], entry["kept"]) == (4, 2, 1, 2)
    assert "empty_response" not in round_entry(0, Path("m0"), metrics)  # m0: no curation
