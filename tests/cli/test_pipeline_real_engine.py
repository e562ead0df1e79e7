"""The stages end to end through the ``judgefree`` command with the real engine on a tiny
random LLaVA (SmolLM2's real tokenizer): generate (a corrupt image among real photos, then a
rerun that resumes), curate with a tiny random CLIP, eval run and eval chair."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from judgefree.testing.material import write_corrupt_image, write_photo_files, write_test_clip

import judgefree.cli.main as cli
from judgefree.store.pair_store import PairStore

PROMPT = "Describe this image in detail."


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    from judgefree.assets.checkpoints import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("ckpt") / "llava", gqa=True, seed=4)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_photo_files(folder, names=("astronaut", "chelsea", "coffee"))
    write_corrupt_image(folder / "03_broken.png")
    return folder


def test_generate_resumes_and_matches_the_engine_called_directly(llava_dir, photo_dir, tmp_path, capsys):
    store = tmp_path / "pairs"
    argv = ["generate", "--model", str(llava_dir), "--images", str(photo_dir), "--out", str(store),
            "--prompt", PROMPT, "--h-rejected", "uniform:0.5,0.9", "--max-new-tokens", "8",
            "--chunk-size", "2", "--seed", "3", "--dtype", "float32", "--device", "cpu", "--no-progress"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "3 pairs generated" in captured.out and "1 images skipped" in captured.out
    assert "03_broken.png" in captured.err
    records = sorted(PairStore(store).records(), key=lambda r: r.image)
    assert [Path(r.image).name for r in records] == ["00_astronaut.png", "01_chelsea.jpg", "02_coffee.png"]
    for record in records:
        assert record.chosen_h == 0.0 and 0.5 <= record.rejected_h <= 0.9
        assert record.prompt_token_ids and record.chosen_token_ids and record.rejected_token_ids
        assert len(record.chosen_cond_logprobs) == len(record.chosen_token_ids)
        assert len(record.rejected_cond_logprobs) == len(record.rejected_token_ids)
        assert all(lp <= 0 for lp in record.chosen_cond_logprobs + record.rejected_cond_logprobs)

    assert cli.main(argv) == 0  # the rerun resumes: nothing new, the corrupt image is retried
    assert "0 pairs generated, 3 already in" in capsys.readouterr().out
    assert sorted(PairStore(store).records(), key=lambda r: r.image) == records

    # Chunking and the CLI change nothing: the engine called directly gives the same pairs.
    from judgefree.engine import Engine
    from judgefree.engine.types import SamplingParams

    engine = Engine.from_pretrained(llava_dir, dtype="float32", device="cpu")
    pairs = engine.generate_pairs([r.image for r in records], PROMPT, h_chosen="fixed:0",
                                  h_rejected="uniform:0.5,0.9", sampling=SamplingParams(),
                                  max_new_tokens=8, seed=3)
    assert [p.chosen.token_ids for p in pairs] == [r.chosen_token_ids for r in records]
    assert [p.rejected.token_ids for p in pairs] == [r.rejected_token_ids for r in records]
    assert [p.chosen.prompt_token_ids for p in pairs] == [r.prompt_token_ids for r in records]


def test_curate_then_evaluate(llava_dir, photo_dir, tmp_path, capsys):
    store, curated = tmp_path / "pairs", tmp_path / "curated"
    assert cli.main(["generate", "--model", str(llava_dir), "--images", str(photo_dir), "--out", str(store),
                     "--max-new-tokens", "6", "--dtype", "float32", "--device", "cpu", "--no-progress"]) == 0
    config, weights = write_test_clip(tmp_path / "clip")
    trl = tmp_path / "trl" / "train.parquet"
    assert cli.main(["curate", "--pairs", str(store), "--clip", str(config), "--clip-weights", str(weights),
                     "--splits", "3", "--keep", "1", "--out", str(curated), "--export-trl", str(trl),
                     "--export-inexact", "keep"]) == 0
    # rendered with the tokenizer of the model the store records; image paths relative to trl/
    assert f"TRL export: 1 pairs -> {trl} (rendered, token-exact; image paths relative to {trl.parent})" \
        in capsys.readouterr().out
    records = list(PairStore(curated).records())
    assert len(records) == 3 and sorted(r.split for r in records) == [0, 1, 2]
    kept = [r for r in records if r.kept]
    assert len(kept) == 1 and kept[0].split == 1
    for r in records:  # after the swap, chosen never scores below rejected
        assert r.chosen_score >= r.rejected_score

    # Object HalBench-style questions over COCO-named copies of the photos, then CHAIR.
    images = tmp_path / "coco_images"
    images.mkdir()
    for i, photo in enumerate(sorted(p for p in photo_dir.iterdir() if "broken" not in p.name), start=1):
        shutil.copy(photo, images / f"COCO_val2014_{i:012d}{photo.suffix}")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image_id": i, "question": PROMPT}) + "\n"
                                 for i in (1, 2, 3)))
    answers = tmp_path / "answers.jsonl"
    assert cli.main(["eval", "run", "--model", str(llava_dir), "--questions", str(questions), "--images",
                     str(images), "--out", str(answers), "--max-new-tokens", "6", "--dtype", "float32",
                     "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == [1, 2, 3]
    coco = tmp_path / "coco"
    coco.mkdir()
    image_list = [{"id": i} for i in (1, 2, 3)]
    (coco / "instances_val2014.json").write_text(json.dumps({
        "images": image_list, "categories": [{"id": 17, "name": "cat"}],
        "annotations": [{"image_id": 2, "category_id": 17}]}))
    (coco / "captions_val2014.json").write_text(json.dumps({"images": image_list, "annotations": []}))
    capsys.readouterr()
    assert cli.main(["eval", "chair", "--captions", str(answers), "--coco-annotations", str(coco)]) == 0
    assert "CHAIRs" in capsys.readouterr().out
