"""Training checkpoints: written to a temporary folder, fsynced, renamed into place; no pickle.

``OUT/checkpoints/step-00000040/`` holds the trainable weights (``trainable.safetensors``;
frozen weights come back from the source checkpoint), the optimizer and scheduler states and
every rank's RNG states (``state_files``: safetensors for tensors, JSON for the rest, so that
resuming from a folder someone else wrote can never run code), and ``state.json`` (step,
metrics so far, and the size of every file), written last. A folder named ``step-*`` exists
only once complete, so resuming takes the highest one; one damaged afterwards (a file missing or
of another size than recorded) is moved aside as ``damaged-step-*`` and the previous one is
used, with a warning that says so. Under FSDP2 rank 0 writes full (unsharded) state dicts,
which load at any world size. Checkpoints of older versions (pickled ``*.pt`` state) are refused.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from judgefree.errors import DamagedFile
from judgefree.io import fsync_dir, fsync_tree
from judgefree.train.distributed import DistContext, barrier, broadcast_object
from judgefree.train.state_files import load_state, save_state

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
PREFIX = "step-"
DAMAGED = "damaged-"


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
    save_state(tmp, f"rng-rank{ctx.rank:05d}", rng_state())
    if ctx.is_main:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / "trainable.safetensors"))
        save_state(tmp, "optimizer", optim_state)
        save_state(tmp, "scheduler", scheduler.state_dict())
    barrier(ctx)
    if ctx.is_main:
        files = {entry.name: entry.stat().st_size for entry in sorted(tmp.iterdir())}
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "world_size": ctx.world_size,
                                                    "files": files}) + "\n")
        fsync_tree(tmp)
        shutil.rmtree(final, ignore_errors=True)  # a rerun of the same step after a resume
        os.replace(tmp, final)
        fsync_dir(root)
        for old in checkpoint_dirs(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(ctx)
    return final


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from, or None when it is whole.

    Raises ``DamagedFile`` for a checkpoint of the pickle format: it is not damaged, but loading
    it could run code, and falling back to an older one would silently lose the newer steps.
    """
    try:
        state = json.loads((path / "state.json").read_text())
    except FileNotFoundError:
        return "state.json is missing"
    except (OSError, ValueError) as err:
        return f"state.json is unreadable ({err})"
    if not isinstance(state, dict) or not isinstance(state.get("files"), dict):
        pickles = sorted(p.name for p in path.glob("*.pt"))
        if pickles:
            raise DamagedFile(
                f"checkpoint {path} keeps its training state as pickle files ({', '.join(pickles)}), which can run "
                "any code when loaded, so judgefree does not load them. Delete "
                f"{path.parent} to train from the start (a run folder you trust can be resumed by the judgefree "
                "version that wrote it)")
        return "state.json lists no files"
    for name, size in state["files"].items():
        file = path / name
        if "/" in name or not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} is {file.stat().st_size} bytes, {size} were written (truncated or replaced)"
    return None


def resume_point(out_dir: str | Path, ctx: DistContext) -> Path | None:
    """The newest whole checkpoint (damaged newer ones moved aside with a warning), or None.
    Rank 0 decides; every rank calls it and gets the same answer."""
    chosen, refusal = None, None
    if ctx.is_main:
        try:
            chosen = _choose(Path(out_dir))
        except DamagedFile as err:
            refusal = str(err)
    chosen, refusal = broadcast_object((chosen, refusal), ctx)
    if refusal is not None:
        raise DamagedFile(refusal)
    return None if chosen is None else Path(chosen)


def _choose(out_dir: Path) -> str | None:
    root = out_dir / CHECKPOINTS
    if root.is_dir():  # saves a killed run left half-written
        for stale in root.glob(f".tmp-{PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    for candidate in reversed(checkpoint_dirs(out_dir)):
        problem = checkpoint_problem(candidate)
        if problem is None:
            log.info("resuming from %s", candidate)
            return str(candidate)
        aside = candidate.with_name(DAMAGED + candidate.name)
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(candidate, aside)
        log.warning("checkpoint %s is damaged (%s): moved aside to %s; resuming from the previous one instead",
                    candidate, problem, aside.name)
    if root.is_dir() and any(root.glob(DAMAGED + "*")):
        log.warning("no whole checkpoint is left in %s: training starts from step 0", root)
    return None


def load_checkpoint(path: Path, policy: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    ctx: DistContext) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote; returns its ``state.json``. Every rank calls it.
    Reads safetensors and JSON only."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_state_dict

    try:
        state = json.loads((path / "state.json").read_text())
        model_state: dict[str, torch.Tensor] = {}
        optim_state: dict[str, Any] = {}
        if ctx.is_main or not ctx.distributed:  # with broadcast_from_rank0 the others receive rank 0's
            model_state = load_file(str(path / "trainable.safetensors"))
            optim_state = load_state(path, "optimizer")
        scheduler_state = load_state(path, "scheduler")
        rng_name = f"rng-rank{ctx.rank:05d}"
        rng = load_state(path, rng_name) if (path / f"{rng_name}.json").is_file() else None
    except Exception as err:  # noqa: BLE001 - safetensors and json raise several kinds
        raise DamagedFile(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); move it away "
                          "to resume from the previous one") from None
    set_state_dict(policy, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=_options(ctx, loading=True))
    scheduler.load_state_dict(scheduler_state)
    if rng is not None:  # a resume at another world size keeps fresh RNG on the new ranks
        set_rng_state(rng)
    return broadcast_object(state, ctx)
