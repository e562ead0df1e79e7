"""The fault suite (issue 17): each test is one trial of an adversarial user or a failing machine
(kills at write points, hostile inputs, edited manifests, concurrent writers, a full disk,
damaged models and checkpoints). Every trial asserts the exit code, that the message names the
cause, that the store or model is left valid, and, where a rerun follows, that the result equals
an uninterrupted run. The tally is printed at the end of the session."""

from __future__ import annotations

from collections import Counter

import pytest

_tally: Counter = Counter()


def pytest_runtest_logreport(report):
    if "tests/faults/" not in report.nodeid.replace("\\", "/"):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _tally["trials"] += 1
        _tally["ok" if report.passed else "skipped" if report.skipped else "failed"] += 1


def pytest_terminal_summary(terminalreporter):
    if _tally["trials"]:
        terminalreporter.write_line(
            f"fault suite: {_tally['trials']} trials, {_tally['ok']} OK, {_tally['failed']} failures, "
            f"{_tally['skipped']} skipped")


@pytest.fixture
def fake_engine(monkeypatch):
    """``judgefree.engine.Engine`` replaced by the fake engine for in-process commands."""
    import judgefree.engine
    from judgefree.testing.fake_engine import FakeEngine

    monkeypatch.setattr(judgefree.engine, "Engine", FakeEngine, raising=False)


@pytest.fixture
def model_dir(fake_model_dir):
    return fake_model_dir


@pytest.fixture
def images(photos_with_corrupt):
    """Six photos and one corrupt image."""
    return photos_with_corrupt


@pytest.fixture
def generate_argv(model_dir, images):
    def argv(out, *extra):
        return ["generate", "--model", str(model_dir), "--images", str(images), "--out", str(out),
                "--max-new-tokens", "12", "--chunk-size", "2", "--seed", "5", "--no-progress", *extra]
    return argv


@pytest.fixture
def uninterrupted(tmp_path, generate_argv, fake_engine):
    """The store one uninterrupted ``judgefree generate`` writes."""
    from judgefree.cli.main import main

    out = tmp_path / "uninterrupted"
    assert main(generate_argv(out)) == 0
    return out
