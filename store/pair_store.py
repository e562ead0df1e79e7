"""The pair store: a folder of Parquet shards plus ``manifest.json``.

Every shard is written to a temporary name and renamed into place, then the manifest (also
written by rename) lists it; the manifest is the single source of truth, so a process killed at
any point leaves a readable store, and files it does not list are leftovers that the next writer
removes. Reading needs only pyarrow. Schema: docs/pair_store.md.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from judgefree.io import write_atomic, write_json_atomic  # noqa: F401  (re-exported)
from judgefree.store.records import SCHEMA, SCHEMA_VERSION, PairRecord

FORMAT = "judgefree-pairs"
MANIFEST = "manifest.json"


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no pair store at {path} ({MANIFEST} missing)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path} is not a {FORMAT} manifest")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise ValueError(f"{manifest_path} has schema version {manifest['schema_version']}, "
                         f"newer than this judgefree reads ({SCHEMA_VERSION})")
    return manifest


class PairStore:
    """Read a pair store: ``PairStore(path).records()`` yields ``PairRecord`` in stored order."""

    def __init__(self, path: str | Path, manifest: dict[str, Any] | None = None):
        self.path = Path(path)
        self.manifest = _read_manifest(self.path) if manifest is None else manifest

    @property
    def stage(self) -> str:
        return self.manifest["stage"]

    @property
    def settings(self) -> dict[str, Any]:
        return self.manifest["settings"]

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Images that produced no pair, with the reason: ``[{"image": ..., "reason": ...}]``."""
        return self.manifest.get("skipped", [])

    def __len__(self) -> int:
        return sum(shard["rows"] for shard in self.manifest["shards"])

    def shard_paths(self) -> list[Path]:
        return [self.path / shard["file"] for shard in self.manifest["shards"]]

    def table(self, columns: list[str] | None = None) -> pa.Table:
        """All rows as one Arrow table (optionally only ``columns``)."""
        tables = [pq.read_table(p, columns=columns, schema=SCHEMA) for p in self.shard_paths()]
        if not tables:
            schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        return pa.concat_tables(tables)

    def records(self, *, kept_only: bool = False) -> Iterator[PairRecord]:
        """Every pair, or with ``kept_only`` the pairs curation kept (needs a curated store)."""
        if kept_only and self.stage != "curated":
            raise ValueError(f"kept_only needs a curated store; {self.path} is '{self.stage}' "
                             "(run `judgefree curate` first, or pass kept_only=False)")
        for shard in self.shard_paths():
            for row in pq.read_table(shard, schema=SCHEMA).to_pylist():
                if not kept_only or row["kept"]:
                    yield PairRecord(**row)


class StoreWriter:
    """Append records to a store, one shard per ``append``; the manifest is rewritten after each.

    ``overwrite=False`` resumes an existing store (its ``settings`` must match);
    ``overwrite=True`` builds a new one beside the old, which stays valid until the first
    committing ``append`` (or ``commit``) replaces the manifest.
    """

    def __init__(self, path: str | Path, *, stage: str, settings: dict[str, Any], overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"pair store path {self.path} exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        settings = json.loads(json.dumps(settings))  # normalise tuples etc. to what JSON gives back
        existing = None if overwrite or not (self.path / MANIFEST).exists() else _read_manifest(self.path)
        if existing is not None:
            if existing["stage"] != stage:
                raise ValueError(f"{self.path} holds a '{existing['stage']}' store, not '{stage}'; use another folder")
            _check_same_settings(self.path, existing["settings"], settings)
            self.manifest = existing
        else:
            self.manifest = {
                "format": FORMAT, "schema_version": SCHEMA_VERSION, "stage": stage, "settings": settings,
                "shard_prefix": f"shard-{uuid.uuid4().hex[:8]}", "shards": [], "skipped": [],
            }
        if existing is not None:
            self._remove_unlisted()

    def keys(self, column: str = "pair_id") -> set[str]:
        """Values of ``column`` already stored (the resume key)."""
        return set(PairStore(self.path, self.manifest).table([column])[column].to_pylist())

    def append(self, records: list[PairRecord], *, commit: bool = True) -> None:
        """Write ``records`` as one new shard; ``commit`` lists it in the manifest right away."""
        if records:
            name = f"{self.manifest['shard_prefix']}-{len(self.manifest['shards']):05d}.parquet"
            table = pa.Table.from_pylist([r.to_row() for r in records], schema=SCHEMA)
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            write_atomic(self.path / name, sink.getvalue().to_pybytes())
            self.manifest["shards"].append({"file": name, "rows": len(records)})
        if commit:
            self.commit()

    def set_skipped(self, skipped: list[dict[str, str]]) -> None:
        self.manifest["skipped"] = skipped

    def update(self, **entries: Any) -> None:
        """Extra manifest entries (summary, selection); written on the next commit."""
        self.manifest.update(entries)

    def commit(self) -> None:
        write_json_atomic(self.path / MANIFEST, self.manifest)
        self._remove_unlisted()

    def _remove_unlisted(self) -> None:
        """Delete shards no manifest lists (a killed write, a replaced store) and stale temp files."""
        listed = {shard["file"] for shard in self.manifest["shards"]}
        for entry in self.path.iterdir():
            stale_tmp = entry.name.startswith(".") and entry.name.endswith(".tmp")
            orphan = entry.suffix == ".parquet" and entry.name.startswith("shard-") and entry.name not in listed
            if entry.is_file() and (stale_tmp or orphan):
                entry.unlink()


def _check_same_settings(path: Path, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
    differing = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if differing:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {wanted.get(k)!r}" for k in differing)
        raise ValueError(f"{path} was written with other settings ({detail}); "
                         "rerun with the same settings to resume, or choose another output folder")
