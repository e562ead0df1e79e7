"""The manifest is not trusted (store/manifest.py): every edit of a path, a count, a digest or a
key is refused by readers and writers alike with a message naming it, and nothing is deleted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from judgefree.testing.material import make_record

from judgefree.errors import DamagedFile
from judgefree.store.pair_store import MANIFEST, PAIRS, PairStore, StoreWriter

SETTINGS = {"prompt": "Describe."}


@pytest.fixture
def store(tmp_path) -> Path:
    folder = tmp_path / "store"
    with StoreWriter(folder, stage="generated", settings=SETTINGS) as writer:
        for i in range(3):
            writer.append([make_record(2 * i, None, None), make_record(2 * i + 1, None, None)])
    (tmp_path / "other" / PAIRS).mkdir(parents=True)  # another store's shard, to be pointed at
    (tmp_path / "other" / PAIRS / "shard-x-00000.parquet").write_bytes(
        PairStore(folder).shard_paths()[0].read_bytes())
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".judgefree.lock"}


def _edit(store: Path, change) -> None:
    manifest = json.loads((store / MANIFEST).read_text())
    change(manifest)
    (store / MANIFEST).write_text(json.dumps(manifest))


def _first(key, value):
    def change(manifest):
        manifest["shards"][0][key] = value
    return change


EDITS = {
    "prefix escapes": (lambda m: m.update(shard_prefix="../x"), "shard_prefix '../x' is not a plain name"),
    "file of another store": (_first("file", "pairs/../../other/pairs/shard-x-00000.parquet"),
                              "is not a .parquet file inside pairs/"),
    "absolute file": (_first("file", "/etc/passwd.parquet"), "is not a .parquet file inside pairs/"),
    "listed twice": (lambda m: m["shards"].append(dict(m["shards"][1])), "is listed twice"),
    "not a shard": (_first("file", MANIFEST), "is not a .parquet file inside pairs/"),
    "no shards key": (lambda m: m.pop("shards"), "has no 'shards' list"),
    "shards not a list": (lambda m: m.update(shards={"a": 1}), "'shards' is not a list"),
    "rows not a number": (_first("rows", "6"), "has no valid 'rows'"),
    "bad digest": (_first("sha256", "abc"), "malformed sha256"),
    "unknown stage": (lambda m: m.update(stage="final"), "stage must be one of generated, curated"),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_an_edited_manifest_is_refused_and_nothing_is_deleted(store, name):
    change, message = EDITS[name]
    _edit(store, change)
    before = _files(store)
    with pytest.raises(DamagedFile, match=message) as read:
        PairStore(store)
    assert str(store / MANIFEST) in str(read.value) and "rerun the `judgefree generate`" in str(read.value)
    with pytest.raises(DamagedFile, match=message):
        StoreWriter(store, stage="generated", settings=SETTINGS)
    assert _files(store) == before


def test_a_symlink_out_of_the_store_is_refused(store, tmp_path):
    victim = PairStore(store).shard_paths()[0]
    victim.unlink()
    os.symlink(tmp_path / "other" / PAIRS / "shard-x-00000.parquet", victim)  # same bytes, another store
    with pytest.raises(DamagedFile, match="resolves to .*other/pairs/shard-x-00000.parquet, outside"):
        PairStore(store)


def test_invalid_json_names_the_file(store):
    (store / MANIFEST).write_text('{"format": "judgefree-pairs", "shards": [')
    with pytest.raises(DamagedFile, match=f"{store / MANIFEST} is not valid JSON"):
        PairStore(store)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "is .* bytes, the manifest recorded .* \\(truncated\\)"),
    (lambda data: data[:-9] + bytes(9), "differs from the sha256 recorded"),
    (lambda data: data + b"x", "replaced or appended to"),
])
def test_a_damaged_shard_is_named_with_its_repair(store, damage, message):
    shard = PairStore(store).shard_paths()[1]
    shard.write_bytes(damage(shard.read_bytes()))
    store_view = PairStore(store)
    assert len(store_view) == 6  # the manifest alone still reads
    with pytest.raises(DamagedFile, match=message) as raised:
        list(store_view.records())
    text = str(raised.value)
    assert f"{PAIRS}/{shard.name}" in text and "delete that file and rerun the `judgefree generate`" in text
    with pytest.raises(DamagedFile, match=message):  # the writer checks before it deletes anything
        StoreWriter(store, stage="generated", settings=SETTINGS)
    assert shard.exists()


def test_wrong_row_count_is_refused_even_without_the_digest_check(store):
    _edit(store, _first("rows", 3))
    with pytest.raises(DamagedFile, match="holds 2 rows, the manifest recorded 3"):
        PairStore(store, verify=False).table()


def test_a_deleted_shard_is_dropped_by_the_next_writer_and_its_pairs_leave(store, caplog):
    shard = PairStore(store).shard_paths()[1]
    shard.unlink()
    with pytest.raises(DamagedFile, match="is missing"):
        PairStore(store).table()
    with StoreWriter(store, stage="generated", settings=SETTINGS) as writer:
        assert writer.keys() == {"p0", "p1", "p4", "p5"}  # p2 and p3 will be generated again
        writer.append([make_record(2, None, None), make_record(3, None, None)])
    assert "is missing and leaves the manifest" in caplog.text
    records = list(PairStore(store).records())
    assert sorted(r.pair_id for r in records) == [f"p{i}" for i in range(6)]
    assert len(set(PairStore(store).shard_paths())) == 3  # the new shard got a new name
