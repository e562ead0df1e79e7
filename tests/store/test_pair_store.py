"""The pair store (curate/store.py): round trip, atomic commits, leftovers of killed writes,
settings guard, reading without torch. The TRL / datasets export: test_trl_export.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from judgefree.testing.material import make_record

from judgefree.store.records import SCHEMA
from judgefree.curate.selection import Selection, select
from judgefree.store.pair_store import MANIFEST, PairStore, StoreWriter


def test_round_trip_keeps_every_field(tmp_path):
    records = [make_record(i, None, None) for i in range(5)]
    writer = StoreWriter(tmp_path, stage="generated", settings={"prompt": "Describe.", "seed": 3})
    writer.append(records[:3])
    writer.append([])  # an empty chunk commits without a shard
    writer.append(records[3:])
    store = PairStore(tmp_path)
    assert list(store.records()) == records  # values chosen exactly representable in float32
    assert len(store) == 5 and len(store.shard_paths()) == 2
    assert store.settings == {"prompt": "Describe.", "seed": 3} and store.stage == "generated"
    assert store.table().schema.equals(SCHEMA)
    assert store.table(["pair_id"]).column("pair_id").to_pylist() == [f"p{i}" for i in range(5)]


def test_empty_store_reads_as_empty(tmp_path):
    StoreWriter(tmp_path, stage="generated", settings={}).commit()
    store = PairStore(tmp_path)
    assert list(store.records()) == [] and store.table().num_rows == 0 and len(store) == 0


def test_resume_requires_the_same_settings_and_stage(tmp_path):
    StoreWriter(tmp_path, stage="generated", settings={"prompt": "a"}).append([make_record(0, None, None)])
    with pytest.raises(ValueError, match="prompt: stored 'a', now 'b'"):
        StoreWriter(tmp_path, stage="generated", settings={"prompt": "b"})
    with pytest.raises(ValueError, match="'generated' store"):
        StoreWriter(tmp_path, stage="curated", settings={"prompt": "a"})
    assert StoreWriter(tmp_path, stage="generated", settings={"prompt": "a"}).keys() == {"p0"}


def test_leftovers_of_a_killed_write_are_removed_on_resume(tmp_path):
    writer = StoreWriter(tmp_path, stage="generated", settings={})
    writer.append([make_record(0, None, None)])
    prefix = writer.manifest["shard_prefix"]
    # a shard renamed into place whose manifest update never happened, and a half-written temp file
    (tmp_path / f"{prefix}-00001.parquet").write_bytes(b"not parquet")
    (tmp_path / f".{prefix}-00002.parquet.999.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not ours")
    resumed = StoreWriter(tmp_path, stage="generated", settings={})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{prefix}-00000.parquet", MANIFEST, "notes.txt"])
    resumed.append([make_record(1, None, None)])
    assert [r.pair_id for r in PairStore(tmp_path).records()] == ["p0", "p1"]


def test_overwrite_keeps_the_old_store_valid_until_commit(tmp_path):
    StoreWriter(tmp_path, stage="curated", settings={"v": 1}).append([make_record(0, 0.5, 0.1)])
    writer = StoreWriter(tmp_path, stage="curated", settings={"v": 2}, overwrite=True)
    writer.append([make_record(1, 0.5, 0.1)], commit=False)
    assert [r.pair_id for r in PairStore(tmp_path).records()] == ["p0"]  # old manifest still rules
    writer.commit()
    assert [r.pair_id for r in PairStore(tmp_path).records()] == ["p1"]
    assert len(list(tmp_path.glob("*.parquet"))) == 1  # the replaced shard is gone


def test_missing_or_foreign_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        PairStore(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a judgefree-pairs manifest"):
        PairStore(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        StoreWriter(tmp_path / "file", stage="generated", settings={})


def test_kept_only_needs_a_curated_store(tmp_path):
    StoreWriter(tmp_path / "gen", stage="generated", settings={}).append([make_record(0, None, None)])
    with pytest.raises(ValueError, match="curated store"):
        list(PairStore(tmp_path / "gen").records(kept_only=True))
    curated = select([make_record(i, s, 0.5) for i, s in enumerate([0.9, 0.05, 0.7])], Selection(splits=3, keep_splits=(2,)))
    StoreWriter(tmp_path / "cur", stage="curated", settings={}).append(curated)
    assert [r.pair_id for r in PairStore(tmp_path / "cur").records(kept_only=True)] == ["p1"]  # |0.05-0.5| largest


def test_store_reads_without_torch(tmp_path):
    StoreWriter(tmp_path, stage="generated", settings={}).append([make_record(0, None, None)])
    code = ("import sys; from judgefree.store import PairStore; "
            f"rows = list(PairStore({str(tmp_path)!r}).records()); "
            "assert rows[0].pair_id == 'p0', rows; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
