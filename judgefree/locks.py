"""Exclusive locks on the folders a stage writes: ``with FolderLock(out, "judgefree generate"):``.

The lock is an OS lock (``fcntl.flock``) on ``FOLDER/.judgefree.lock``. The OS ties it to the
open file, so it goes away with the process however the process ends (kill -9 included): a
crashed run never leaves a stale lock behind. The file also says who holds the lock (PID, host,
job id, command, since when), and the error a second writer gets names them. The file itself
is never deleted: deleting it would let two processes lock two different files of one name.

Locks conflict between processes and between two locks of one process alike (flock belongs to
the open file, not to the process), so two writers in one program are caught too. Readers need
no lock: they read the last committed manifest.

A lock belongs to a job. Today a job is one process; ``job_id()`` is what a multi-process job
(torchrun ranks writing one store, issue 19) will share, see docs/pair_store.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from judgefree.errors import DiskFull, FolderLocked, is_disk_full

LOCK_FILE = ".judgefree.lock"


def job_id() -> str:
    """The job this process belongs to: ``JUDGEFREE_JOB_ID`` when set, else the process itself."""
    return os.environ.get("JUDGEFREE_JOB_ID") or f"pid-{os.getpid()}@{socket.gethostname()}"


def read_holder(lock_file: str | os.PathLike) -> dict[str, Any]:
    """What the lock file says about its (last) holder; ``{}`` when unreadable."""
    try:
        return json.loads(Path(lock_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "a process that has not recorded itself yet"
    mine = holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
    text = f"PID {holder['pid']}{' (this process)' if mine else ''} on {holder.get('host', '?')}"
    if holder.get("command"):
        text += f", `{holder['command']}`"
    if holder.get("since"):
        text += f", since {holder['since']}"
    return text


class FolderLock:
    """An exclusive lock on ``folder`` (created if missing), held from ``acquire`` to ``release``.

    ``command`` says what holds it (shown to a second writer). ``name`` is the lock file's
    name inside ``folder``; a lock for one output file uses ``.FILENAME.lock`` beside it.
    """

    def __init__(self, folder: str | os.PathLike, command: str | None = None, *, name: str = LOCK_FILE):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
        self._fd: int | None = None

    @classmethod
    def for_file(cls, file: str | os.PathLike, command: str | None = None) -> FolderLock:
        """The lock of one output file (``.NAME.lock`` in its folder)."""
        file = Path(file)
        return cls(file.parent, command, name=f".{file.name}.lock")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock, or raise ``FolderLocked`` naming its holder; never waits."""
        if self._fd is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if is_disk_full(err):
                raise DiskFull(f"disk full: cannot create the lock file in {self.folder}", str(self.folder)) from err
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path)
            if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                raise FolderLocked(f"{self.folder} is already being written by another writer of this process "
                                   f"({describe_holder(holder)}); close that one first") from None
            raise FolderLocked(
                f"{self.folder} is being written by another judgefree run ({describe_holder(holder)}); wait for it "
                "to finish, or stop it and rerun (its lock dies with it, even after kill -9)") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._record()
        return self

    def _record(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "job": job_id(), "command": self.command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        data = (json.dumps(info) + "\n").encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as err:  # who holds it is a courtesy; the lock itself is taken
            if not is_disk_full(err):
                raise

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock must not outlive its owner object
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the OS releases it anyway
            pass


def holder_of(folder: str | os.PathLike, *, name: str = LOCK_FILE) -> dict[str, Any] | None:
    """Who holds ``folder``'s lock right now (``read_holder``'s fields), or None when free."""
    path = Path(folder) / name
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path) or {"pid": None}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
