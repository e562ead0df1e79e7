"""scripts/gpu_check.sh --dry-run: the GPU run's script itself works (every step runs on this
CPU at tiny shapes, through the Triton interpreter), writes its tables, log and summary, and
reports a failing step without stopping the others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(*args, env=None, timeout=600):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_usage_error_names_the_problem(tmp_path):
    result = _run("--dry-run")
    assert result.returncode == 2
    assert "usage" in result.stderr and "OUT_DIR" in result.stderr


@pytest.mark.slow  # ~2-3 minutes on 2 cores: the point is to run every benchmark step once, at tiny shapes
def test_dry_run_writes_every_table_the_log_and_the_summary(tmp_path):
    out = tmp_path / "gpu-out"
    result = _run("--dry-run", str(out))
    summary = (out / "summary.md").read_text()
    assert result.returncode == 0, summary + (out / "gpu_check.log").read_text()[-4000:]
    for step in ("wheels", "package links import", "versions", "gpu tests", "mix_sample", "linear_logprobs", "paged_attention", "generate", "dpo"):
        assert any(line.startswith(f"| {step}") and "| ok |" in line for line in summary.splitlines()), (step, summary)
    results = out / "bench" / "results"
    for bench in ("mix_sample", "linear_logprobs", "paged_attention", "generate", "dpo"):
        table = (results / f"{bench}_cpu-dryrun.md").read_text()
        assert "|" in table, bench
    generate = (results / "generate_cpu-dryrun.md").read_text()
    assert "measured / bound" in generate and "load average" in generate
    log = (out / "gpu_check.log").read_text()
    assert "device tag: cpu-dryrun" in log and "every step ok" in log
    assert not (out / "work-generate").exists() and not (out / "pkg").exists()  # checkpoints and links removed


def test_a_failing_step_is_reported_and_the_rest_still_run(tmp_path):
    # a Python that fails every command: each step must be marked failed, the summary complete
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    out = tmp_path / "gpu-out"
    result = _run("--dry-run", str(out), env={"PYTHON": str(fake)}, timeout=120)
    assert result.returncode == 1
    summary = (out / "summary.md").read_text()
    assert "| versions | FAILED (exit 3) |" in summary
    assert "| dpo | FAILED (exit 3) |" in summary
    assert "some step failed" in (out / "gpu_check.log").read_text()
