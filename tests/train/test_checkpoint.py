"""Checkpoints (train/checkpoint.py): saved and restored without pickle, a damaged newest one
moved aside for the previous one (with a warning), a pickled one refused before it can run."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from judgefree.errors import DamagedFile
from judgefree.train import checkpoint as ck
from judgefree.train.distributed import DistContext

CTX = DistContext(0, 1, torch.device("cpu"))


class Payload:
    """Unpickling this writes a file: what a planted checkpoint would do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _training(seed: int = 0):
    from transformers import get_scheduler

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # a frozen part, as with LoRA
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = get_scheduler("linear", optimizer, num_training_steps=8, num_warmup_steps=1)
    return model, optimizer, scheduler


def _steps(model, optimizer, scheduler, n):
    for _ in range(n):
        model(torch.randn(3, 4)).square().mean().backward()
        optimizer.step(), scheduler.step(), optimizer.zero_grad()


@pytest.fixture
def run(tmp_path):
    model, optimizer, scheduler = _training()
    for step in (2, 4):
        _steps(model, optimizer, scheduler, 2)
        ck.save_checkpoint(tmp_path, step, model, optimizer, scheduler, {"metrics": [step]}, CTX)
    return tmp_path, model, optimizer, scheduler


def test_a_checkpoint_restores_weights_optimizer_scheduler_and_rng_without_pickle(run, monkeypatch):
    out, model, optimizer, scheduler = run
    path = ck.resume_point(out, CTX)
    assert path.name == "step-00000004" and ck.checkpoint_problem(path) is None
    assert not list(path.glob("*.pt")) and json.loads((path / "state.json").read_text())["files"]
    expected_draw = torch.rand(2)  # draws after the save; the restore must repeat them
    continued = [p.detach().clone() for p in model.parameters()]

    def no_pickle(*args, **kwargs):
        raise AssertionError("a checkpoint load must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    fresh, fresh_optimizer, fresh_scheduler = _training(seed=5)
    state = ck.load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler, CTX)
    assert state["step"] == 4 and state["metrics"] == [4]
    assert torch.equal(torch.rand(2), expected_draw)
    trainable = [p for p in fresh.parameters() if p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(trainable, [p for p, q in zip(continued, model.parameters())
                                                               if q.requires_grad]))
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    assert fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_and_says_so(run, caplog):
    out, *_ = run
    newest = out / "checkpoints" / "step-00000004"
    weights = newest / "optimizer.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (out / "checkpoints" / ".tmp-step-00000006").mkdir()  # a save that was killed
    assert "optimizer.safetensors is 100 bytes" in ck.checkpoint_problem(newest)
    path = ck.resume_point(out, CTX)
    assert path.name == "step-00000002"
    assert "step-00000004 is damaged" in caplog.text and "resuming from the previous one" in caplog.text
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["damaged-step-00000004", "step-00000002"]


def test_a_missing_state_file_counts_as_damaged(run):
    out, *_ = run
    (out / "checkpoints" / "step-00000004" / "state.json").write_text('{"step": 4, "fil')
    assert "state.json is unreadable" in ck.checkpoint_problem(out / "checkpoints" / "step-00000004")
    (out / "checkpoints" / "step-00000002" / "state.json").unlink()
    assert ck.resume_point(out, CTX) is None  # nothing whole: training starts from step 0


def test_a_pickled_checkpoint_is_refused_and_its_payload_never_runs(run, tmp_path):
    out, *_ = run
    planted = out / "checkpoints" / "step-00000006"
    planted.mkdir()
    marker = tmp_path / "payload-ran"
    (planted / "optimizer.pt").write_bytes(pickle.dumps({"state": Payload(marker)}))
    (planted / "scheduler.pt").write_bytes(pickle.dumps(Payload(marker)))
    (planted / "state.json").write_text(json.dumps({"step": 6, "metrics": []}))  # the old format
    with pytest.raises(DamagedFile, match="pickle files \\(optimizer.pt, scheduler.pt\\).*does not load them"):
        ck.resume_point(out, CTX)
    assert not marker.exists() and planted.is_dir()  # refused, not silently skipped
