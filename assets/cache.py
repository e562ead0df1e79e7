"""The per-machine cache of built assets (converted weights, demo checkpoints).

``cached_folder(name, build)`` builds ``CACHE/name`` once: concurrent callers (pytest-xdist,
torchrun ranks) wait on a file lock, and the folder appears whole or not at all.

``entries()`` lists what the cache holds and ``remove_entry(name)`` deletes one entry under the
same lock (``judgefree cache list / prune``): a folder being built is never removed, and a removed
one disappears in one rename before its files are deleted, so a reader never sees half of it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One folder of the cache: ``name`` as ``cached_folder`` names it; ``leftover``: the
    temporary folder (``.NAME.tmp``) of a build that was killed, or of one running now."""

    name: str
    path: Path
    bytes: int
    complete: bool
    leftover: bool = False


def _lock_path(root: Path, name: str) -> Path:
    return root / f"{name}.lock"


def _size(folder: Path) -> int:
    total = 0
    for base, _, files in os.walk(folder):  # symlinks are not followed
        for file in files:
            try:
                total += os.lstat(os.path.join(base, file)).st_size
            except OSError:
                pass
    return total


def entries(cache_dir: str | os.PathLike | None = None) -> list[CacheEntry]:
    """The folders of the cache, by name (lock files are not entries)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.is_symlink():
            continue
        leftover = path.name.startswith(".") and path.name.endswith(".tmp")
        if path.name.startswith(".") and not leftover:
            continue
        name = path.name[1:-len(".tmp")] if leftover else path.name
        found.append(CacheEntry(name, path, _size(path), not leftover and is_built(path), leftover))
    return found


def remove_entry(entry: CacheEntry) -> bool:
    """Delete ``entry`` under its build lock (never waits): False, and nothing removed, while a
    ``cached_folder`` call builds that name. The lock file stays (deleting it could let two
    builders lock two different files of one name)."""
    root = entry.path.parent
    with open(_lock_path(root, entry.name), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not entry.path.is_dir():
            return True  # removed since it was listed
        if entry.leftover:
            shutil.rmtree(entry.path, ignore_errors=True)
            return True
        # One rename first: the folder (with its completion marker) is gone at once; a prune
        # killed during the deletion leaves a leftover the next prune removes.
        doomed = root / f".{entry.name}.tmp"
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(entry.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return True
