"""The per-machine cache of built assets (converted weights, demo checkpoints).

``cached_folder(name, build)`` builds ``CACHE/name`` once: concurrent callers (pytest-xdist,
torchrun ranks) wait on a file lock, and the folder appears whole or not at all.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from judgefree.io import building_folder

DONE_MARKER = ".complete"


def default_cache_dir() -> Path:
    """``$JUDGEFREE_CACHE`` or ``~/.cache/judgefree``."""
    return Path(os.environ.get("JUDGEFREE_CACHE") or Path.home() / ".cache" / "judgefree")


def is_built(folder: Path) -> bool:
    return (folder / DONE_MARKER).is_file()


def build_once(folder: str | os.PathLike, build: Callable[[Path], None], note: str) -> Path:
    """``folder`` as ``build(tmp)`` makes it, built at most once (marked complete by ``note``)."""
    folder = Path(folder)
    if not is_built(folder):
        with building_folder(folder) as tmp:
            build(tmp)
            (tmp / DONE_MARKER).write_text(note + "\n")
    return folder


def cached_folder(name: str, build: Callable[[Path], None], cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir/name``, built by ``build(tmp_folder)`` on first use (see the module docstring)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / name
    if is_built(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build_once(target, build, name)
    return target
