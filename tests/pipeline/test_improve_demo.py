"""``judgefree improve --demo-smollm2`` (the earlier demo)'s main job, end to end on the real SmolLM2-based demo
model: it says which parts are random, trains (loss down, margin up), saves a model the engine
loads, and a rerun skips every finished stage."""

from __future__ import annotations

import json

import pytest

import judgefree.cli.main as cli


@pytest.mark.slow
def test_demo_runs_one_round_and_a_rerun_skips_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("improve",))
    out = tmp_path / "demo"
    assert cli.main(["improve", "--demo-smollm2", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "randomly initialised" in text and "SmolLM2-135M" in text  # says plainly what is random
    train = json.loads((out / "round-1" / "train.done").read_text())
    assert train["last"]["loss"] < train["first"]["loss"] and train["last"]["rewards/margins"] > 0
    assert (out / "round-1" / "train" / "model" / "model.safetensors").is_file()
    assert "\n  m1: '" in text  # the saved model answered in the engine (an engine error raises)

    assert cli.main(["improve", "--demo-smollm2", "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("already done, skipped") == 3
