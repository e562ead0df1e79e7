"""N writers of one job on one store: a manifest part per rank, merged when read and folded by
rank 0; no rank touches another's shards; the lock belongs to the job, so an unrelated job
(or a plain second run) is still refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from judgefree.distributed import JobLock, Ranks, lock_folder, rank_info, strided
from judgefree.errors import DamagedFile, FolderLocked
from judgefree.locks import FolderLock
from judgefree.store.manifest import PARTS, part_path
from judgefree.store.pair_store import PairStore, PartWriter, StoreWriter, part_progress
from judgefree.testing.material import make_record
from judgefree.testing.store_checks import assert_valid_store

SETTINGS = {"model": "m", "prompt": "p"}


def _records(start, n):
    return [make_record(i, None, None) for i in range(start, start + n)]


def _ids(path):
    return [r.pair_id for r in PairStore(path).records()]


def test_strided_shares_cover_everything_once_and_spread_neighbours():
    for total in range(0, 12):
        for world in range(1, 5):
            shares = [strided(list(range(total)), rank, world) for rank in range(world)]
            assert sorted(sum(shares, [])) == list(range(total))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
            assert all(all(b - a == world for a, b in zip(s, s[1:])) for s in shares)
    with pytest.raises(ValueError, match="rank must lie"):
        strided([1], 2, 2)


def test_parts_are_read_merged_and_folded_by_rank_zero(tmp_path):
    out = tmp_path / "store"
    main = StoreWriter(out, stage="generated", settings=SETTINGS)
    main.append(_records(0, 2))  # a shard from an earlier single-process run
    zero = main.part(0)
    one = PartWriter(out, 1, PairStore(out).manifest, main.lock)
    zero.append(_records(10, 2))
    one.append(_records(20, 3), skipped=[{"image": "/x/b.png", "reason": "unreadable"}])
    zero.append(_records(12, 1), skipped=[{"image": "/x/a.png", "reason": "too large"}])
    # Mid-job: the manifest.json lists only the old shard, a reader sees every rank's.
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) == 1
    store = PairStore(out)
    assert len(store) == 8 and store.check() == 8
    assert [s["image"] for s in store.skipped] == ["/x/a.png", "/x/b.png"]
    assert part_progress(out) == (6, 2, 0)
    zero.commit(done=True)
    one.commit(done=True)
    assert part_progress(out)[2] == 2
    main.fold_parts(order=["/x/b.png", "/x/a.png"])
    main.close()
    assert not list((out / PARTS).glob("*.json"))
    store = assert_valid_store(out)
    assert len(store) == 8 and sorted(_ids(out)) == sorted(r.pair_id for r in _records(0, 2) + _records(10, 3)
                                                           + _records(20, 3))
    assert [s["image"] for s in store.skipped] == ["/x/b.png", "/x/a.png"]  # in image order
    names = sorted(p.name for p in store.shard_paths())
    assert sum("-r0-" in n for n in names) == 2 and sum("-r1-" in n for n in names) == 1


def test_a_part_writer_never_deletes_or_moves_another_ranks_files(tmp_path):
    out = tmp_path / "store"
    main = StoreWriter(out, stage="generated", settings=SETTINGS)
    main.commit()
    zero, one = main.part(0), PartWriter(out, 1, PairStore(out).manifest, main.lock)
    zero.append(_records(0, 2))
    # Rank 0 is between staging a shard and listing it: rank 1's commits leave it alone.
    staged = out / ".staging" / "shard-someone-r0-00009.parquet"
    staged.write_bytes(b"half-written")
    stray = out / "pairs" / "shard-someone-r0-00010.parquet"
    stray.write_bytes(b"moving in")
    one.append(_records(5, 1))
    one.commit(done=True)
    assert staged.read_bytes() == b"half-written" and stray.read_bytes() == b"moving in"
    assert len(PairStore(out)) == 3
    main.close()


def test_a_single_process_rerun_folds_what_killed_ranks_committed(tmp_path):
    out = tmp_path / "store"
    main = StoreWriter(out, stage="generated", settings=SETTINGS)
    main.commit()
    one = PartWriter(out, 1, PairStore(out).manifest, main.lock)
    one.append(_records(0, 2))
    # Killed between listing a shard in its part and moving it out of .staging/.
    entry = one.state["shards"][0]
    final = out / entry["file"]
    os.replace(final, out / ".staging" / final.name)
    main.close()  # the whole job is gone
    assert len(PairStore(out)) == 2  # the staged, listed shard reads
    with StoreWriter(out, stage="generated", settings=SETTINGS) as again:
        assert len(again.keys()) == 2
        again.append(_records(7, 1))
    assert not list((out / PARTS).glob("*.json"))
    assert len(assert_valid_store(out)) == 3


def test_a_fold_killed_after_manifest_json_reads_each_shard_once(tmp_path):
    out = tmp_path / "store"
    main = StoreWriter(out, stage="generated", settings=SETTINGS)
    main.commit()
    part = main.part(0)
    part.append(_records(0, 2))
    saved = part_path(out, 0).read_text()
    main.fold_parts()
    part_path(out, 0).write_text(saved)  # as if killed before the part was deleted
    main.close()
    assert len(PairStore(out)) == 2 and PairStore(out).check() == 2


def test_a_damaged_part_is_named(tmp_path):
    out = tmp_path / "store"
    with StoreWriter(out, stage="generated", settings=SETTINGS) as main:
        main.commit()
    part_path(out, 3).parent.mkdir(exist_ok=True)
    part_path(out, 3).write_text("{not json")
    with pytest.raises(DamagedFile, match=r"rank-3\.json is not valid JSON"):
        PairStore(out)


def test_a_part_writer_needs_the_jobs_lock(tmp_path):
    out = tmp_path / "store"
    with StoreWriter(out, stage="generated", settings=SETTINGS) as main:
        main.commit()
        manifest = main.manifest

    class Released:
        held = False

    with pytest.raises(ValueError, match="needs the job's lock"):
        PartWriter(out, 1, manifest, Released())


_HOLD = textwrap.dedent("""
    import sys, time
    from judgefree.locks import FolderLock
    lock = FolderLock(sys.argv[1], "rank 0 of a job").acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_the_lock_belongs_to_the_job(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "JUDGEFREE_JOB_ID": "job-A"})
    try:
        assert child.stdout.readline().strip() == "locked"
        monkeypatch.setenv("JUDGEFREE_JOB_ID", "job-A")
        assert JobLock(folder).held  # another rank of job A shares it
        monkeypatch.setenv("JUDGEFREE_JOB_ID", "job-B")
        with pytest.raises(FolderLocked, match="another job .*'job-A'"):
            JobLock(folder)  # an unrelated job's rank is refused
        with pytest.raises(FolderLocked, match="being written by another judgefree run"):
            FolderLock(folder).acquire()  # and so is any second rank 0 / plain run
    finally:
        child.kill()
        child.wait(timeout=60)
    monkeypatch.setenv("JUDGEFREE_JOB_ID", "job-A")
    with pytest.raises(FolderLocked, match="does not hold the lock"):
        JobLock(folder)  # rank 0 gone: nobody writes without it


def test_one_process_is_a_job_of_one(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with Ranks.start() as ranks:
        assert (ranks.rank, ranks.world_size, ranks.distributed) == (0, 1, False)
        assert ranks.broadcast(5) == 5 and ranks.gather("x") == ["x"]
        lock = lock_folder(tmp_path / "f", ranks)
        assert isinstance(lock, FolderLock) and lock.held
        lock.release()
    assert rank_info().world_size == 1
