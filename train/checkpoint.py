"""Training checkpoints: written to a temporary folder, fsynced, renamed into place.

``OUT/checkpoints/step-00000040/`` holds the trainable weights (``trainable.safetensors``;
frozen weights come back from the source checkpoint), the optimizer and scheduler states,
every rank's RNG states and ``state.json`` (step, metrics so far). A folder named
``step-*`` exists only once complete, so resuming takes the highest one. Under FSDP2 rank 0
writes full (unsharded) state dicts, which load at any world size.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from judgefree.train.distributed import DistContext, barrier, broadcast_object

CHECKPOINTS = "checkpoints"
PREFIX = "step-"


def _options(ctx: DistContext, *, loading: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=ctx.distributed, ignore_frozen_params=True,
                            strict=False, broadcast_from_rank0=loading and ctx.distributed)


def checkpoint_dirs(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = checkpoint_dirs(out_dir)
    return found[-1] if found else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for entry in path.iterdir():
        if entry.is_file():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(path)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: str | Path, step: int, policy: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any], ctx: DistContext, keep: int = 2) -> Path:
    """Checkpoint after ``step`` optimizer steps; keeps the newest ``keep``. Every rank calls it."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(out_dir) / CHECKPOINTS
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    model_state, optim_state = get_state_dict(policy, optimizer, options=_options(ctx, loading=False))
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(ctx)
    torch.save(rng_state(), tmp / f"rng-rank{ctx.rank:05d}.pt")
    if ctx.is_main:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / "trainable.safetensors"))
        torch.save(optim_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    barrier(ctx)
    if ctx.is_main:
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "world_size": ctx.world_size}) + "\n")
        _fsync_tree(tmp)
        shutil.rmtree(final, ignore_errors=True)  # a rerun of the same step after a resume
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in checkpoint_dirs(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(ctx)
    return final


def load_checkpoint(path: Path, policy: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    ctx: DistContext) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote; returns its ``state.json``. Every rank calls it."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = json.loads((path / "state.json").read_text())
    model_state: dict[str, torch.Tensor] = {}
    optim_state: dict[str, Any] = {}
    if ctx.is_main or not ctx.distributed:  # with broadcast_from_rank0 the others receive rank 0's
        model_state = load_file(str(path / "trainable.safetensors"))
        optim_state = torch.load(path / "optimizer.pt", weights_only=False)
    set_state_dict(policy, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=_options(ctx, loading=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng_file = path / f"rng-rank{ctx.rank:05d}.pt"
    if rng_file.is_file():  # a resume at another world size keeps fresh RNG on the new ranks
        set_rng_state(torch.load(rng_file, weights_only=False))
    return broadcast_object(state, ctx)
