"""``judgefree generate``: argument errors before the engine loads, and a resumable run with a
fake engine standing in for ``judgefree.engine.Engine``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from judgefree.testing.fake_engine import FakeEngine
from judgefree.testing.material import write_corrupt_image, write_photo_files

import judgefree.engine
import judgefree.cli.main as cli
from judgefree.store.pair_store import PairStore


REAL_SUBCOMMANDS = cli.SUBCOMMANDS


@pytest.fixture(autouse=True)
def only_generate(monkeypatch):
    """Build the parser from this subcommand alone, whatever state the others are in."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("generate",))


def test_generate_is_a_registered_subcommand():
    assert "generate" in REAL_SUBCOMMANDS


@pytest.fixture
def model_dir(fake_model_dir):
    return fake_model_dir


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    write_photo_files(folder, ("chelsea", "coffee", "rocket"))
    write_corrupt_image(folder / "01_zz_broken.png")
    return folder


@pytest.fixture
def fake_engine(monkeypatch):
    made = []

    class Recording(FakeEngine):
        @classmethod
        def from_pretrained(cls, path, dtype="auto", device="cpu"):
            made.append((path, dtype, device))
            return super().from_pretrained(path, dtype=dtype, device=device)

    monkeypatch.setattr(judgefree.engine, "Engine", Recording, raising=False)
    return made


def _generate(model, images, out, *extra):
    return cli.main(["generate", "--model", str(model), "--images", str(images), "--out", str(out),
                 "--prompt", "Describe image in detail.", "--no-progress", *extra])


def test_missing_model_folder_is_a_clear_error(tmp_path, images, fake_engine, capsys):
    assert _generate(tmp_path / "absent", images, tmp_path / "out") == 2
    assert "model folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _generate(tmp_path / "empty", images, tmp_path / "out") == 2
    assert "has no config.json" in capsys.readouterr().err
    assert fake_engine == []  # the engine was never built


@pytest.mark.parametrize("flag, value, message", [
    ("--h-rejected", "gaussian:0.5", "bad h distribution 'gaussian:0.5'"),
    ("--h-chosen", "beta:1,2", "kind must be one of"),
    ("--top-p", "0", "top_p must lie in"),
])
def test_bad_sampling_arguments_are_clear_errors(tmp_path, model_dir, images, fake_engine, capsys, flag, value, message):
    assert _generate(model_dir, images, tmp_path / "out", flag, value) == 2
    err = capsys.readouterr().err
    assert err.startswith("judgefree generate: error:") and message in err
    assert fake_engine == [] and not (tmp_path / "out").exists()


def test_missing_images_source_is_a_clear_error(tmp_path, model_dir, fake_engine, capsys):
    assert _generate(model_dir, tmp_path / "nope", tmp_path / "out") == 2
    assert "no such folder or list file" in capsys.readouterr().err


def test_generate_skips_corrupt_images_and_resumes(tmp_path, model_dir, images, fake_engine, capsys):
    out = tmp_path / "pairs"
    assert _generate(model_dir, images, out, "--h-rejected", "gaussian:0.5,0.15", "--chunk-size", "2",
                     "--dtype", "float32", "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert "3 pairs generated, 0 already in" in captured.out and "1 images skipped" in captured.out
    assert "01_zz_broken.png" in captured.err
    assert fake_engine == [(str(model_dir), "float32", "cpu")]
    store = PairStore(out)
    assert len(store) == 3 and store.settings["prompt"] == "Describe image in detail."
    records = list(store.records())

    shutil.copy(images / "00_chelsea.png", images / "05_copy.png")  # a new image joins the folder
    assert _generate(model_dir, images, out, "--h-rejected", "gaussian:0.5,0.15", "--dtype", "float32",
                     "--device", "cpu", "--chunk-size", "2") == 0
    assert "1 pairs generated, 3 already in" in capsys.readouterr().out
    assert list(PairStore(out).records())[:3] == records
