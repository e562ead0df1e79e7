"""The pair store (store/pair_store.py): round trip, atomic commits, leftovers of killed writes,
settings guard, reading without torch, the folder of pairs read by pandas / pyarrow.dataset /
datasets, field descriptions. The TRL / datasets export: test_trl_export.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from judgefree.testing.material import make_record

from judgefree.store.records import SCHEMA, describe_columns
from judgefree.curate.selection import Selection, select
from judgefree.store.pair_store import MANIFEST, PAIRS, STAGING, PairStore, StoreWriter

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pair_store.md"


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
    with StoreWriter(tmp_path, stage="generated", settings={}) as writer:
        writer.append([make_record(0, None, None)])
        prefix = writer.manifest["shard_prefix"]
    # a shard staged whose manifest update never happened, one in pairs/ that no manifest
    # lists, half-written temp files, and a file that is not ours
    (tmp_path / STAGING).mkdir()
    (tmp_path / STAGING / f"{prefix}-00001.parquet").write_bytes(b"not parquet")
    (tmp_path / PAIRS / f"{prefix}-00007.parquet").write_bytes(b"not listed")
    (tmp_path / PAIRS / f".{prefix}-00002.parquet.999.tmp").write_bytes(b"half")
    (tmp_path / f".{MANIFEST}.123.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not ours")
    with StoreWriter(tmp_path, stage="generated", settings={}) as resumed:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".judgefree.lock", MANIFEST, "notes.txt", PAIRS])
        assert [p.name for p in (tmp_path / PAIRS).iterdir()] == [f"{prefix}-00000.parquet"]
        resumed.append([make_record(1, None, None)])
    assert [r.pair_id for r in PairStore(tmp_path).records()] == ["p0", "p1"]
    assert sorted(p.name for p in (tmp_path / PAIRS).iterdir()) == [f"{prefix}-00000.parquet", f"{prefix}-00001.parquet"]


def test_overwrite_keeps_the_old_store_valid_until_commit(tmp_path):
    StoreWriter(tmp_path, stage="curated", settings={"v": 1}).append([make_record(0, 0.5, 0.1)])
    writer = StoreWriter(tmp_path, stage="curated", settings={"v": 2}, overwrite=True)
    writer.append([make_record(1, 0.5, 0.1)], commit=False)
    assert [r.pair_id for r in PairStore(tmp_path).records()] == ["p0"]  # old manifest still rules
    import pandas as pd

    assert pd.read_parquet(tmp_path / PAIRS)["pair_id"].tolist() == ["p0"]  # so does the folder
    writer.commit()
    writer.close()
    assert [r.pair_id for r in PairStore(tmp_path).records()] == ["p1"]
    assert len(list((tmp_path / PAIRS).glob("*.parquet"))) == 1  # the replaced shard is gone
    assert not (tmp_path / STAGING).exists()


def test_a_second_writer_is_refused_while_the_first_holds_the_store(tmp_path):
    with StoreWriter(tmp_path, stage="generated", settings={}) as first:
        with pytest.raises(RuntimeError, match="already being written by another writer of this process"):
            StoreWriter(tmp_path, stage="generated", settings={})
        first.append([make_record(0, None, None)])
    with StoreWriter(tmp_path, stage="generated", settings={}) as second:  # released: the next one may write
        assert second.keys() == {"p0"}


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


@pytest.fixture
def two_shard_store(tmp_path):
    """A curated store of two shards with everything curation writes beside them."""
    store = tmp_path / "store"
    with StoreWriter(store, stage="curated", settings={}) as writer:
        writer.append(select([make_record(i, 0.1 * i, 0.5) for i in range(3)], Selection()))
        writer.append(select([make_record(i, 0.9, 0.1 * i) for i in range(3, 5)], Selection()))
    (store / "histogram.png").write_bytes(b"\x89PNG not really")
    (store / "scores").mkdir()
    SCHEMA.empty_table().select(["pair_id"]).to_pandas().to_parquet(store / "scores" / "part-00000.parquet")
    (store / "reference_logprobs.parquet").write_bytes((store / "scores" / "part-00000.parquet").read_bytes())
    return store


def test_folder_of_pairs_reads_as_exactly_the_pairs(two_shard_store, tmp_path):
    import datasets
    import pandas as pd
    import pyarrow.dataset as ds

    store = PairStore(two_shard_store)
    expected = store.table()
    assert expected.num_rows == 5
    frame = pd.read_parquet(store.pairs_dir)
    assert frame["pair_id"].tolist() == expected["pair_id"].to_pylist()  # shard names sort in written order
    assert list(frame.columns) == SCHEMA.names
    assert frame["chosen_token_ids"].map(list).tolist() == expected["chosen_token_ids"].to_pylist()
    table = ds.dataset(store.pairs_dir, format="parquet").to_table()
    assert table.schema.equals(SCHEMA) and table.sort_by("pair_id").equals(expected.sort_by("pair_id"))
    loaded = datasets.load_dataset("parquet", data_dir=str(store.pairs_dir), split="train",
                                   cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == 5 and loaded.column_names == SCHEMA.names
    assert sorted(loaded["pair_id"]) == sorted(expected["pair_id"].to_pylist())
    row = next(r for r in loaded if r["pair_id"] == "p3")
    assert row == next(r.to_row() for r in store.records() if r.pair_id == "p3")


def test_an_uncommitted_shard_stays_invisible_to_folder_readers(two_shard_store):
    import pyarrow.dataset as ds

    with StoreWriter(two_shard_store, stage="curated", settings={}) as writer:
        writer.append([make_record(9, 0.5, 0.1)], commit=False)
        assert ds.dataset(two_shard_store / PAIRS, format="parquet").count_rows() == 5
        writer.commit()
    assert ds.dataset(two_shard_store / PAIRS, format="parquet").count_rows() == 6


def test_every_column_is_described_in_the_shards_and_the_docs(two_shard_store):
    import pyarrow.parquet as pq

    descriptions = describe_columns()
    assert set(descriptions) == set(SCHEMA.names) and all(len(text) > 10 for text in descriptions.values())
    schema = pq.read_schema(PairStore(two_shard_store).shard_paths()[0])
    for name in SCHEMA.names:
        assert schema.field(name).metadata[b"description"].decode() == descriptions[name]
    assert schema.metadata[b"judgefree.format"] == b"judgefree-pairs"
    documented = DOCS.read_text()
    assert [name for name in SCHEMA.names if f"`{name}`" not in documented.replace("{chosen,rejected}_", "chosen_")
            and f"`{name}`" not in documented.replace("{chosen,rejected}_", "rejected_")] == []


def test_store_reads_without_torch(tmp_path):
    StoreWriter(tmp_path, stage="generated", settings={}).append([make_record(0, None, None)])
    code = ("import sys; from judgefree.store import PairStore; "
            f"rows = list(PairStore({str(tmp_path)!r}).records()); "
            "assert rows[0].pair_id == 'p0', rows; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
