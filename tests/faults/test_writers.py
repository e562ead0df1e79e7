"""Trials: two writers on one folder. The second is refused with exit code 3 and the first
writer's PID, whatever the stage; a writer killed with SIGKILL leaves no stale lock."""

from __future__ import annotations

import json
import os
import signal
import time

from judgefree.cli.main import main
from judgefree.testing.holders import hold_lock, start_cli
from judgefree.testing.store_checks import assert_valid_store, rows


def _wait_for(path, child, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the first writer never started"
        time.sleep(0.05)


def test_two_generate_runs_on_one_store(tmp_path, generate_argv, uninterrupted, capsys):
    out, go = tmp_path / "pairs", tmp_path / "go"
    first = start_cli(generate_argv(out), wait_for=go)
    _wait_for(tmp_path / "go.ready", first)  # the first run holds the store and is generating
    assert main(generate_argv(out)) == 3
    err = capsys.readouterr().err
    assert f"PID {first.pid} " in err and str(out) in err and "wait for it to finish" in err
    go.write_text("go")
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert "6 pairs generated" in stdout
    assert_valid_store(out)
    assert rows(out) == rows(uninterrupted)


def test_a_killed_writer_leaves_no_stale_lock(tmp_path, generate_argv, uninterrupted, capsys):
    out, go = tmp_path / "pairs", tmp_path / "go"
    first = start_cli(generate_argv(out), wait_for=go)
    _wait_for(tmp_path / "go.ready", first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert main(generate_argv(out)) == 0  # at once: the lock died with its process
    assert "6 pairs generated" in capsys.readouterr().out
    assert_valid_store(out)
    assert rows(out) == rows(uninterrupted)


def test_curate_refuses_a_busy_output_and_a_source_still_being_written(tmp_path, uninterrupted, tiny_clip_files,
                                                                       capsys):
    config, weights = tiny_clip_files
    argv = ["curate", "--pairs", str(uninterrupted), "--clip", str(config), "--clip-weights", str(weights),
            "--device", "cpu", "--no-progress", "--out"]
    with hold_lock(tmp_path / "curated") as holder:
        assert main([*argv, str(tmp_path / "curated")]) == 3
        assert f"PID {holder.pid} " in capsys.readouterr().err
    assert not (tmp_path / "curated" / "manifest.json").exists()
    with hold_lock(uninterrupted) as holder:
        assert main([*argv, str(tmp_path / "other")]) == 3
        err = capsys.readouterr().err
        assert "is still being written" in err and f"PID {holder.pid} " in err
    assert main([*argv, str(tmp_path / "curated")]) == 0  # both free again
    assert_valid_store(tmp_path / "curated")


def test_training_refuses_a_busy_run_folder(tmp_path, capsys):
    from judgefree.train.launch import main as train_main

    out = tmp_path / "dpo"
    with hold_lock(out) as holder:
        code = train_main(["--model", str(tmp_path / "m"), "--pairs", str(tmp_path / "p"), "--out", str(out),
                           "--device", "cpu", "--no-progress"])
        assert code == 3
        assert f"PID {holder.pid} " in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".judgefree.lock"]  # nothing else was touched


def test_improve_refuses_a_busy_run_folder(tmp_path, model_dir, images, capsys):
    out = tmp_path / "runs"
    with hold_lock(out) as holder:
        assert main(["improve", "--model", str(model_dir), "--images", str(images), "--out", str(out),
                     "--no-progress"]) == 3
        assert f"PID {holder.pid} " in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".judgefree.lock"]


def test_eval_run_refuses_an_answers_file_being_written(tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": 1, "answer": "kept"}) + "\n")
    with hold_lock(tmp_path, ".answers.jsonl.lock") as holder:
        assert main(["eval", "run", "--model", str(tmp_path / "m"), "--questions", str(tmp_path / "q.jsonl"),
                     "--out", str(answers)]) == 3
        assert f"PID {holder.pid} " in capsys.readouterr().err
    assert answers.read_text() == json.dumps({"question_id": 1, "answer": "kept"}) + "\n"


def test_readers_need_no_lock(uninterrupted):
    with hold_lock(uninterrupted):
        assert len(assert_valid_store(uninterrupted)) == 6
