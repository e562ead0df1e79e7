"""Upgrading a pair store of schema version 1 (shards beside ``manifest.json``, no digests) to
the current layout, in place: shards move into ``pairs/`` and get their size and sha256.

Crash-safe in three steps: hard-link (or copy) each shard into ``pairs/``, replace the
manifest, then delete the old names. Killed before the manifest is replaced, the old store is
intact (a rerun starts over); killed after, the old names are leftovers the next writer removes.
The old shards are checked as far as they can be (a plain name, a Parquet file, the listed row
count); what they held is trusted from then on, so migrate a store you trust.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from judgefree.errors import DamagedFile
from judgefree.io import write_json_atomic
from judgefree.locks import FolderLock
from judgefree.store import manifest as mf
from judgefree.store.records import SCHEMA_VERSION

log = logging.getLogger(__name__)
_V1_NAME = re.compile(r"shard-[A-Za-z0-9_-]{1,64}-\d{5}\.parquet")


def upgrade(store: Path, old: dict[str, Any]) -> dict[str, Any]:
    """The upgraded manifest of the schema-1 store ``old`` at ``store`` (written to disk). The
    caller holds the store's lock."""
    if old.get("schema_version") != 1 or not isinstance(old.get("shards"), list):
        raise DamagedFile(f"{store / mf.MANIFEST}: not a schema-1 manifest with a 'shards' list; cannot upgrade it")
    pairs = store / mf.PAIRS
    pairs.mkdir(exist_ok=True)
    entries, seen = [], set()
    for index, entry in enumerate(old["shards"]):
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _V1_NAME.fullmatch(name) or name in seen:
            raise DamagedFile(f"{store / mf.MANIFEST}: shard entry {index} ({name!r}) is not a plain shard name "
                              "listed once; the store cannot be upgraded as it is")
        seen.add(name)
        source = store / name
        if source.is_symlink() or not source.is_file():
            raise DamagedFile(f"{store}: shard {name} listed by the schema-1 manifest is missing or a link")
        try:
            rows = pq.ParquetFile(source).metadata.num_rows
        except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
            raise DamagedFile(f"{store}: shard {name} is not a readable Parquet file ({err})") from None
        if rows != entry.get("rows"):
            raise DamagedFile(f"{store}: shard {name} holds {rows} rows, the manifest recorded {entry.get('rows')}")
        target = pairs / name
        target.unlink(missing_ok=True)  # a link from an upgrade killed before its manifest
        try:
            os.link(source, target)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, target)
        entries.append(mf.shard_entry(f"{mf.PAIRS}/{name}", target.read_bytes(), rows))
    prefix = old.get("shard_prefix") if isinstance(old.get("shard_prefix"), str) else "shard-migrated"
    manifest = {**old, "schema_version": SCHEMA_VERSION, "shards": entries, "next_shard": len(entries),
                "shard_prefix": prefix, "model": old.get("model"), "skipped": old.get("skipped", [])}
    mf.validate(store, manifest)
    write_json_atomic(store / mf.MANIFEST, manifest)
    for name in seen:
        (store / name).unlink(missing_ok=True)
    log.warning("pair store %s: upgraded from schema version 1 to %d (%d shards moved into %s/)",
                store, SCHEMA_VERSION, len(entries), mf.PAIRS)
    return manifest


def migrate_store(path: str | Path) -> bool:
    """Upgrade the store at ``path`` in place if it has an older layout; True if it did."""
    store = Path(path)
    if not (store / mf.MANIFEST).is_file():
        raise FileNotFoundError(f"no pair store at {store} ({mf.MANIFEST} missing)")
    with FolderLock(store):
        manifest = mf.load_json(store)
        if manifest["schema_version"] >= SCHEMA_VERSION:
            mf.validate(store, manifest)
            return False
        upgrade(store, json.loads(json.dumps(manifest)))
        return True
