"""Stores of schema version 1 (shards beside manifest.json, no digests): readers refuse them
with the upgrade command, ``judgefree store migrate`` and any writer upgrade them in place,
crash-safely, to rows identical to the old ones."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from judgefree.testing.material import make_record

import judgefree.cli.main as cli
from judgefree.store import migrate
from judgefree.store.manifest import OldLayout
from judgefree.store.pair_store import MANIFEST, PAIRS, PairStore, StoreWriter

SETTINGS = {"prompt": "Describe."}


def write_v1_store(folder: Path, stage: str = "generated") -> list:
    """A store exactly as schema 1 laid it out (the writer of that version, inlined)."""
    folder.mkdir(parents=True)
    records = [make_record(i, None, None) for i in range(5)]
    shards = []
    for index, chunk in enumerate((records[:2], records[2:])):
        name = f"shard-1a2b3c4d-{index:05d}.parquet"
        pq.write_table(pa.Table.from_pylist([r.to_row() for r in chunk]), folder / name, compression="zstd")
        shards.append({"file": name, "rows": len(chunk)})
    manifest = {"format": "judgefree-pairs", "schema_version": 1, "stage": stage, "settings": SETTINGS,
                "shard_prefix": "shard-1a2b3c4d", "shards": shards, "skipped": [{"image": "x", "reason": "r"}]}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return records


def test_a_reader_refuses_with_the_upgrade_command_and_migrate_upgrades(tmp_path, capsys):
    store = tmp_path / "old"
    records = write_v1_store(store)
    with pytest.raises(OldLayout, match=f"judgefree store migrate {store}"):
        PairStore(store)
    assert cli.main(["store", "migrate", str(store)]) == 0
    assert "upgraded to the current layout" in capsys.readouterr().out
    upgraded = PairStore(store)
    assert list(upgraded.records()) == records and upgraded.skipped == [{"image": "x", "reason": "r"}]
    assert sorted(p.name for p in store.iterdir()) == [".judgefree.lock", MANIFEST, PAIRS]
    assert cli.main(["store", "check", str(store)]) == 0
    assert "5 pairs" in capsys.readouterr().out
    assert cli.main(["store", "migrate", str(store)]) == 0
    assert "already in the current layout" in capsys.readouterr().out


def test_an_upgrade_killed_before_its_manifest_leaves_the_old_store_and_reruns(tmp_path, monkeypatch):
    store = tmp_path / "old"
    records = write_v1_store(store)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process stops where the manifest would be replaced

    monkeypatch.setattr(migrate, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        migrate.migrate_store(store)
    assert json.loads((store / MANIFEST).read_text())["schema_version"] == 1
    assert all((store / f"shard-1a2b3c4d-{i:05d}.parquet").is_file() for i in range(2))
    monkeypatch.undo()
    assert migrate.migrate_store(store) is True
    assert list(PairStore(store).records()) == records


def test_resuming_generation_upgrades_and_appends(tmp_path, caplog):
    store = tmp_path / "old"
    records = write_v1_store(store)
    with StoreWriter(store, stage="generated", settings=SETTINGS) as writer:
        assert writer.keys() == {r.pair_id for r in records}
        writer.append([make_record(9, None, None)])
    assert "upgraded from schema version 1" in caplog.text
    assert [r.pair_id for r in PairStore(store).records()] == ["p0", "p1", "p2", "p3", "p4", "p9"]
    assert not list(store.glob("shard-*.parquet"))  # the old names are gone


def test_a_schema_one_manifest_with_an_escaping_name_is_not_upgraded(tmp_path):
    store = tmp_path / "old"
    write_v1_store(store)
    manifest = json.loads((store / MANIFEST).read_text())
    manifest["shards"][0]["file"] = "../elsewhere/shard-1a2b3c4d-00000.parquet"
    (store / MANIFEST).write_text(json.dumps(manifest))
    assert cli.main(["store", "migrate", str(store)]) == 2
    with pytest.raises(ValueError, match="is not a plain shard name"):
        migrate.migrate_store(store)
