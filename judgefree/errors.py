"""Errors that ask the user to act (free disk space, wait for another run, repair a file) rather
than report a bug. The command line prints each as one line, with no traceback, and exits with
its own code (``exit_code``), so that a pipeline can tell "retry later" from "fix the input"."""

from __future__ import annotations

import errno

# Exit codes of the command line.
BAD_INPUT = 2  # a wrong argument, a missing or damaged input file
FOLDER_IN_USE = 3  # another process is writing the output folder: wait, then rerun
DISK_FULL = 4  # no space left: free some, then rerun (the output is left valid)

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class FolderLocked(RuntimeError):
    """Another process holds the lock of a folder this one wants to write."""


class DiskFull(OSError):
    """The disk (or a quota) ran out of space while writing ``folder``; nothing was lost."""

    def __init__(self, message: str, folder: str, code: int = errno.ENOSPC):
        super().__init__(code, message)
        self.message, self.folder = message, folder

    def __str__(self) -> str:
        return self.message


class DamagedFile(ValueError):
    """A file judgefree wrote earlier (a manifest, a shard, a checkpoint) is damaged or was
    edited into something it cannot trust; the message names it and the repair."""


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in _DISK_FULL_ERRNOS


def exit_code(err: BaseException) -> int | None:
    """The command line's exit code for an error the user can act on, None for a bug."""
    if isinstance(err, FolderLocked):
        return FOLDER_IN_USE
    if is_disk_full(err):
        return DISK_FULL
    if isinstance(err, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return BAD_INPUT
    return None


def one_line(err: BaseException) -> str:
    """The message the command line prints for ``err``."""
    if is_disk_full(err) and not isinstance(err, DiskFull):
        return f"disk full: {err}"
    return str(err)
