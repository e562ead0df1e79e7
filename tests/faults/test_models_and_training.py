"""Trials: damaged models and checkpoints, and training runs stopped by their own checks.
A truncated newest checkpoint falls back to the previous one (saying so) and still ends with the
weights of an uninterrupted run; a pickled checkpoint is refused before its payload can run; a
truncated model or a config that does not fit the weights is a one-line error; a run rejected
by an argument check leaves nothing that blocks the corrected rerun."""

from __future__ import annotations

import json
import logging
import pickle
import shutil

import pytest
import torch

from judgefree.cli.main import main
from judgefree.testing.material import load_weights, write_small_photos
from judgefree.train.launch import main as train

ARGS = ["--finetune", "lora", "--lr", "1e-3", "--epochs", "3", "--batch-size", "2", "--micro-batch-size", "1",
        "--warmup-ratio", "0.25", "--save-every", "2", "--train-seed", "3", "--device", "cpu", "--no-progress"]


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # what a planted checkpoint runs on unpickling
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, train_llava_dir, llava_store):
    """One uninterrupted run: 6 steps, checkpoints at steps 4 and 6 kept."""
    out = tmp_path_factory.mktemp("train") / "whole"
    assert train(["--model", str(train_llava_dir), "--pairs", str(llava_store), "--out", str(out), *ARGS]) == 0
    return out


def _unfinished_copy(whole_run, target):
    """The run as a kill after its last checkpoint, before the export, leaves it."""
    shutil.copytree(whole_run, target)
    shutil.rmtree(target / "model")
    (target / "result.json").unlink()
    return target


def test_a_truncated_newest_checkpoint_falls_back_and_ends_identical(whole_run, train_llava_dir, llava_store,
                                                                     tmp_path, caplog, capsys):
    out = _unfinished_copy(whole_run, tmp_path / "run")
    newest = out / "checkpoints" / "step-00000006" / "trainable.safetensors"
    newest.write_bytes(newest.read_bytes()[:-64])
    with caplog.at_level(logging.WARNING):
        assert train(["--model", str(train_llava_dir), "--pairs", str(llava_store), "--out", str(out), *ARGS]) == 0
    assert "step-00000006 is damaged (trainable.safetensors is" in caplog.text
    assert "resuming from the previous one" in caplog.text
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed_from"] == 4
    ours, theirs = load_weights(out / "model"), load_weights(whole_run / "model")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert (out / "checkpoints" / "damaged-step-00000006").is_dir()


def test_a_pickled_checkpoint_is_refused_and_its_payload_never_runs(whole_run, train_llava_dir, llava_store,
                                                                    tmp_path, capsys):
    out = _unfinished_copy(whole_run, tmp_path / "run")
    planted = out / "checkpoints" / "step-00000008"
    planted.mkdir()
    marker = tmp_path / "payload-ran"
    (planted / "optimizer.pt").write_bytes(pickle.dumps({"state": Payload(marker)}))
    (planted / "state.json").write_text(json.dumps({"step": 8, "metrics": []}))
    assert train(["--model", str(train_llava_dir), "--pairs", str(llava_store), "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after transformers' progress bars: one line, no traceback
    assert "Traceback" not in err and last.startswith("judgefree.train.launch: error: checkpoint ")
    assert "pickle files (optimizer.pt)" in last and "does not load them" in last
    assert not marker.exists() and not (out / "model").exists()


@pytest.fixture
def broken_models(tmp_path, train_llava_dir):
    truncated = tmp_path / "truncated"
    shutil.copytree(train_llava_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    reshaped = tmp_path / "reshaped"
    shutil.copytree(train_llava_dir, reshaped)
    config = json.loads((reshaped / "config.json").read_text())
    config["text_config"]["intermediate_size"] += 16
    (reshaped / "config.json").write_text(json.dumps(config))
    return {"truncated": (truncated, "model.safetensors is damaged: .* bytes where its header describes .*truncated"),
            "reshaped": (reshaped, "shape|do not match the weights")}


@pytest.mark.parametrize("which", ["truncated", "reshaped"])
def test_a_damaged_model_is_a_one_line_error(broken_models, which, llava_store, tmp_path, capsys):
    import re

    folder, message = broken_models[which]
    images = tmp_path / "images"
    write_small_photos(images, ("astronaut",))
    assert main(["generate", "--model", str(folder), "--images", str(images), "--out", str(tmp_path / "pairs"),
                 "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert train(["--model", str(folder), "--pairs", str(llava_store), "--out", str(tmp_path / "dpo"), *ARGS]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert re.search(message, last) and last.startswith("judgefree.train.launch: error:") and "Traceback" not in err


def test_a_run_rejected_by_its_checks_does_not_block_the_corrected_rerun(train_llava_dir, llava_store, tmp_path,
                                                                         capsys):
    out = tmp_path / "dpo"
    common = ["--model", str(train_llava_dir), "--pairs", str(llava_store), "--out", str(out)]
    assert train([*common, *ARGS, "--batch-size", "64"]) == 2  # the store holds 4 pairs
    assert "fewer than batch_size=64" in capsys.readouterr().err
    assert train([*common, *ARGS, "--max-steps", "1"]) == 0
    assert json.loads((out / "result.json").read_text())["steps"] == 1
