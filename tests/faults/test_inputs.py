"""Trials with the real engine (a tiny random LLaVA): hostile image files are skipped and listed
with their reason while the good images of their chunk go on; a 16-bit PNG gives exactly the
pair of its 8-bit twin (scaled, not clipped to white); a resume with another --chunk-size gives
the store of an uninterrupted run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from judgefree.cli.main import main
from judgefree.generation.driver import GenerationSettings, generate_store, list_images
from judgefree.store.pair_store import PairStore
from judgefree.testing.hostile import fifo, non_utf8_name, sixteen_bit_twin, symlink_loop, write_bomb
from judgefree.testing.material import write_small_photos
from judgefree.testing.store_checks import assert_valid_store, rows

PROMPT = "Describe this image in detail."


@pytest.fixture(scope="module")
def hostile_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    good = write_small_photos(folder, ("astronaut", "chelsea", "camera"))
    grey = np.asarray(Image.open(good[2]).convert("L"))
    Image.fromarray(grey).save(folder / "20_grey8.png")
    Image.fromarray(sixteen_bit_twin(grey)).save(folder / "21_grey16.png")
    write_bomb(folder / "10_bomb.png")
    shutil.copy(good[0], non_utf8_name(folder, b"11_caf\xe9"))  # a good picture under a bad name
    symlink_loop(folder / "12_loop.png")
    fifo(folder / "13_pipe.png")
    (folder / "14_folder.png").mkdir()
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(folder / "15_float.tif")
    return folder


REASONS = {
    "10_bomb.png": "engine error: image too large",
    "11_caf\\xe9.png": "file name is not valid UTF-8",
    "12_loop.png": "symlink loop",
    "13_pipe.png": "not a regular file",
    "14_folder.png": "not a regular file",
    "15_float.tif": "engine error: unsupported image",
}


def _argv(model, images, out, *extra):
    return ["generate", "--model", str(model), "--images", str(images), "--out", str(out), "--prompt", PROMPT,
            "--max-new-tokens", "5", "--chunk-size", "4", "--seed", "3", "--dtype", "float32", "--device", "cpu",
            "--no-progress", *extra]


def test_hostile_images_are_skipped_and_listed_and_the_rest_proceeds(tiny_llava_dir, hostile_images, tmp_path,
                                                                     capsys):
    out = tmp_path / "pairs"
    assert main(_argv(tiny_llava_dir, hostile_images, out)) == 0
    captured = capsys.readouterr()
    assert "5 pairs generated" in captured.out and "6 images skipped" in captured.out
    store = assert_valid_store(out)
    skipped = {Path(entry["image"]).name: entry["reason"] for entry in store.skipped}
    assert skipped.keys() == REASONS.keys()
    for name, reason in REASONS.items():
        assert skipped[name].startswith(reason), (name, skipped[name])
        assert name in captured.err
    stored = {Path(r.image).name: r for r in store.records()}
    assert sorted(stored) == ["00_astronaut.png", "01_chelsea.png", "02_camera.png", "20_grey8.png", "21_grey16.png"]
    eight, sixteen = stored["20_grey8.png"], stored["21_grey16.png"]
    assert sixteen.image_hash == eight.image_hash  # the same pixels reached the engine
    assert (sixteen.chosen_token_ids, sixteen.rejected_token_ids) == (eight.chosen_token_ids, eight.rejected_token_ids)
    assert store.model["weights_sha256"] and store.model["path"] == str(Path(tiny_llava_dir).resolve())
    before = rows(out)
    assert main(_argv(tiny_llava_dir, hostile_images, out)) == 0  # the rerun retries them, still listed
    assert "0 pairs generated, 5 already in" in capsys.readouterr().out
    assert rows(out) == before and {Path(e["image"]).name for e in PairStore(out).skipped} == REASONS.keys()


class Interrupt(Exception):
    pass


def _stop_after(index):
    if index == 0:
        raise Interrupt


@pytest.fixture(scope="module")
def engine(make_engine, tiny_llava_dir):
    """The real engine on its PyTorch paths (the Triton interpreter would only slow these down)."""
    return make_engine(tiny_llava_dir, attention_backend="torch", sampling_backend="torch")


@pytest.fixture
def four_photos(tmp_path):
    folder = tmp_path / "photos"
    write_small_photos(folder, ("astronaut", "chelsea", "coffee", "rocket"))
    write_bomb(folder / "01_b_bomb.png")  # skipped in chunk 0, retried by every rerun
    return list_images(folder)


def test_a_resume_after_a_kill_is_bit_identical_with_the_real_engine(engine, tiny_llava_dir, four_photos,
                                                                      tmp_path):
    settings = GenerationSettings(model=str(tiny_llava_dir), prompt=PROMPT, max_new_tokens=5, seed=3)
    generate_store(engine, four_photos, tmp_path / "whole", settings, chunk_size=3, progress=False)
    with pytest.raises(Interrupt):
        generate_store(engine, four_photos, tmp_path / "resumed", settings, chunk_size=3, progress=False,
                       after_chunk=_stop_after)
    assert len(PairStore(tmp_path / "resumed")) == 2  # chunk 0: two photos and the bomb
    report = generate_store(engine, four_photos, tmp_path / "resumed", settings, chunk_size=3, progress=False)
    assert report.already_stored == 2 and report.generated == 2
    assert rows(tmp_path / "resumed") == rows(tmp_path / "whole")  # every float to the last bit


def test_a_resume_with_another_chunk_size_is_refused(engine, tiny_llava_dir, four_photos, tmp_path):
    settings = GenerationSettings(model=str(tiny_llava_dir), prompt=PROMPT, max_new_tokens=5, seed=3)
    with pytest.raises(Interrupt):
        generate_store(engine, four_photos, tmp_path / "pairs", settings, chunk_size=3, progress=False,
                       after_chunk=_stop_after)
    before = rows(tmp_path / "pairs")
    with pytest.raises(ValueError, match="was generated with --chunk-size 3; resume with the same"):
        generate_store(engine, four_photos, tmp_path / "pairs", settings, chunk_size=2, progress=False)
    assert rows(tmp_path / "pairs") == before
    # why: the same images in other batches give the same tokens, log-probs off in the last bits
    other = generate_store(engine, four_photos, tmp_path / "other", settings, chunk_size=1, progress=False)
    assert other.generated == 4
    for a, b in zip(rows(tmp_path / "other")[:2], before, strict=True):
        assert a["chosen_token_ids"] == b["chosen_token_ids"] and a["rejected_token_ids"] == b["rejected_token_ids"]
        assert a["chosen_cond_logprobs"] == pytest.approx(b["chosen_cond_logprobs"], abs=1e-4)


def test_a_store_refuses_to_continue_with_other_weights(model_dir, images, tmp_path, fake_engine, capsys):
    (model_dir / "model.safetensors").write_bytes(b"weights of the first model")
    out = tmp_path / "pairs"
    argv = ["generate", "--model", str(model_dir), "--images", str(images), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    stored = rows(out)
    assert PairStore(out).model["path"] == str(model_dir.resolve())
    (model_dir / "model.safetensors").write_bytes(b"weights retrained in place")  # same path, other weights
    shutil.copy(images / "00_astronaut.png", images / "09_new.png")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "was generated by another model" in err and "weights sha256" in err
    assert rows(out) == stored
