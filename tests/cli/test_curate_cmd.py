"""``judgefree curate`` end to end with a tiny open_clip model registered from a config file,
on a store generated from real photos by a fake engine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from judgefree.testing.fake_engine import FakeEngine
from judgefree.testing.material import write_photo_files, write_test_clip

import judgefree.cli.main as cli
from judgefree.generation.driver import GenerationSettings, generate_store, list_images
from judgefree.store.pair_store import PairStore


REAL_SUBCOMMANDS = cli.SUBCOMMANDS


@pytest.fixture(autouse=True)
def only_curate(monkeypatch):
    """Build the parser from this subcommand alone, whatever state the others are in."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("curate",))


def test_curate_is_a_registered_subcommand():
    assert "curate" in REAL_SUBCOMMANDS


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate_cmd")
    write_photo_files(root / "images", ("astronaut", "chelsea", "coffee", "rocket", "camera"))
    generate_store(FakeEngine(), list_images(root / "images"), root / "pairs",
                   GenerationSettings(model="fake", prompt="Describe image in detail."), progress=False)
    config, weights = write_test_clip(root / "clip")
    return root, config, weights


def _curate(setup, out, *extra):
    root, config, weights = setup
    return cli.main(["curate", "--pairs", str(root / "pairs"), "--clip", str(config), "--clip-weights", str(weights),
                 "--device", "cpu", "--out", str(out), "--no-progress", *extra])


def test_curate_writes_store_summary_histogram_and_trl_export(setup, tmp_path, capsys):
    out = tmp_path / "curated"
    trl = tmp_path / "trl.parquet"
    assert _curate(setup, out, "--splits", "5", "--keep", "3,4", "--score", "cosine", "--export-trl", str(trl),
                   "--export-style", "messages", "--embed-images") == 0  # the fake engine's ids have no tokenizer
    printed = capsys.readouterr().out
    assert "pairs 5: scored 5, unscored 0" in printed and "kept 2" in printed and "split  4:" in printed
    assert f"TRL export: 2 pairs -> {trl} (messages, not token-exact" in printed and "images embedded" in printed
    store = PairStore(out)
    assert store.settings["clip"]["kind"] == "cosine" and store.settings["selection"]["keep_splits"] == [3, 4]
    kept = list(store.records(kept_only=True))
    assert sorted(r.split for r in kept) == [3, 4]
    assert (out / "histogram.png").is_file()
    import pyarrow.parquet as pq

    table = pq.read_table(trl)
    assert table.num_rows == 2 and all(image[0]["bytes"] for image in table.column("images").to_pylist())


def test_a_rendered_export_without_its_model_fails_before_scoring(setup, tmp_path, capsys):
    # the fake store records model "fake": no tokenizer to render with, so nothing is scored
    assert _curate(setup, tmp_path / "out", "--export-trl", str(tmp_path / "trl.parquet")) == 2
    assert "model folder fake (the tokenizer of the rendered export) not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    (("--keep", "10"), "split index 10 is outside 0..9"),
    (("--keep-diff", "0.5:0.1"), "LO <= HI"),
    (("--splits", "0"), "splits must be >= 1"),
])
def test_bad_selection_is_a_clear_error(setup, tmp_path, capsys, extra, message):
    assert _curate(setup, tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err


def test_bad_clip_and_missing_store_are_clear_errors(setup, tmp_path, capsys):
    root, _, weights = setup
    assert cli.main(["curate", "--pairs", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "manifest.json missing" in capsys.readouterr().err
    assert cli.main(["curate", "--pairs", str(root / "pairs"), "--clip", "Not-A-CLIP", "--clip-weights", str(weights),
                 "--out", str(tmp_path / "o")]) == 2
    assert "unknown open_clip model 'Not-A-CLIP'" in capsys.readouterr().err


def test_keep_and_keep_diff_exclude_each_other(setup, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _curate(setup, tmp_path / "out", "--keep", "1", "--keep-diff", "0:1")
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
