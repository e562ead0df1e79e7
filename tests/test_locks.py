"""Folder locks (judgefree/locks.py): a second writer is refused with the holder's PID, a killed
holder leaves no stale lock, two locks of one process conflict too, and the file stays."""

from __future__ import annotations

import json
import os
import signal

import pytest

from judgefree.errors import FolderLocked
from judgefree.locks import LOCK_FILE, FolderLock, holder_of
from judgefree.testing.holders import hold_lock


def test_a_second_process_is_refused_and_named_then_a_killed_holder_frees_the_folder(tmp_path):
    with hold_lock(tmp_path) as holder:
        with pytest.raises(FolderLocked) as refused:
            FolderLock(tmp_path, "second").acquire()
        message = str(refused.value)
        assert f"PID {holder.pid} " in message and "holder for a test" in message and str(tmp_path) in message
        assert holder_of(tmp_path)["pid"] == holder.pid
        os.kill(holder.pid, signal.SIGKILL)  # no cleanup at all
        holder.wait(timeout=60)
        assert holder_of(tmp_path) is None
        with FolderLock(tmp_path, "second") as lock:  # at once: the OS dropped the dead holder's lock
            assert lock.held and json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert (tmp_path / LOCK_FILE).is_file()  # never deleted (two processes could lock two files)


def test_two_locks_of_one_process_conflict_and_release_frees(tmp_path):
    first = FolderLock(tmp_path / "new" / "folder").acquire()  # creates the folder
    with pytest.raises(FolderLocked, match="another writer of this process"):
        FolderLock(tmp_path / "new" / "folder").acquire()
    first.release()
    first.release()  # idempotent
    with FolderLock(tmp_path / "new" / "folder"):
        pass


def test_a_forgotten_lock_is_released_with_its_object(tmp_path):
    FolderLock(tmp_path).acquire()  # dropped at once: the object's end releases it
    with FolderLock(tmp_path):
        pass


def test_a_file_lock_sits_beside_the_file_and_is_its_own(tmp_path):
    answers = tmp_path / "answers.jsonl"
    with hold_lock(tmp_path, ".answers.jsonl.lock"):
        with pytest.raises(FolderLocked):
            FolderLock.for_file(answers).acquire()
        with FolderLock(tmp_path):  # the folder's lock is another one
            pass
