"""Trials: the disk fills up during generate or curate. The command exits with code 4 and says
"disk full" with the folder; the store stays valid (a replaced curated store stays the old
one); after space is freed, the rerun gives the rows of an uninterrupted run. Once with ENOSPC
injected at the writer, once with a real 96 KiB tmpfs (where the machine allows one)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from contextlib import contextmanager

import pytest

from judgefree import io
from judgefree.cli.main import main
from judgefree.testing.holders import cli_command
from judgefree.testing.store_checks import assert_valid_store, rows


@contextmanager
def full_after(writes: int):
    """The disk takes ``writes`` more files, then every write fails half-way with ENOSPC."""
    original, done = io._write_all, []

    def write(fd, data):
        done.append(1)
        if len(done) > writes:
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        original(fd, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(io, "_write_all", write)
        yield


def test_generate_on_a_full_disk_then_resumed(tmp_path, generate_argv, uninterrupted, capsys):
    out = tmp_path / "pairs"
    with full_after(3):  # shard 1, manifest 1, shard 2; then full
        assert main(generate_argv(out)) == 4
    err = capsys.readouterr().err
    assert "error: disk full: could not write" in err and str(out) in err and "free some space and rerun" in err
    store = assert_valid_store(out, settled=False)
    assert len(store) == 2 and rows(out) == rows(uninterrupted)[:2]
    assert main(generate_argv(out)) == 0
    assert_valid_store(out)
    assert rows(out) == rows(uninterrupted)


def test_curate_on_a_full_disk_keeps_the_old_curated_store(tmp_path, uninterrupted, tiny_clip_files, capsys):
    config, weights = tiny_clip_files
    out = tmp_path / "curated"

    def curate(*extra):
        return main(["curate", "--pairs", str(uninterrupted), "--out", str(out), "--clip", str(config),
                     "--clip-weights", str(weights), "--device", "cpu", "--splits", "3", "--no-progress", *extra])

    assert curate("--keep", "0") == 0
    old = rows(out)
    with full_after(0):  # the scores are cached: the first write is the new store's shard
        assert curate("--keep", "2") == 4
    err = capsys.readouterr().err
    assert "disk full" in err and str(out) in err
    assert rows(out) == old
    assert_valid_store(out, settled=False)
    assert curate("--keep", "2") == 0
    assert_valid_store(out)
    assert [row["kept"] for row in rows(out)] == [row["split"] == 2 for row in rows(out)]


def _tmpfs_available(folder) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {folder}"], capture_output=True, timeout=60)
    return probe.returncode == 0


def test_generate_on_a_real_full_tmpfs(tmp_path, generate_argv, uninterrupted):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if not _tmpfs_available(mount):
        pytest.skip("no user namespace to mount a small tmpfs in")
    keep = tmp_path / "kept"
    store = mount / "pairs"
    first = " ".join(f"'{a}'" for a in cli_command(generate_argv(store, "--chunk-size", "1")))
    script = f"""
        mount -t tmpfs -o size=96k tmpfs {mount} || exit 90
        {first} 2> {tmp_path}/first.err; echo $? > {tmp_path}/first.rc
        cp -a {store} {tmp_path}/after-full
        mount -o remount,size=8m {mount}
        {first} > /dev/null 2>&1; echo $? > {tmp_path}/second.rc
        cp -a {store} {keep}
    """
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "first.rc").read_text().strip() == "4"
    err = (tmp_path / "first.err").read_text()
    assert "disk full" in err and str(store) in err, err
    partial = assert_valid_store(tmp_path / "after-full", settled=False)
    assert 0 < len(partial) < 6 and rows(tmp_path / "after-full") == rows(uninterrupted)[:len(partial)]
    assert (tmp_path / "second.rc").read_text().strip() == "0"
    assert_valid_store(keep)
    assert rows(keep) == rows(uninterrupted)
