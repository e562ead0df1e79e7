"""The pair store: ``manifest.json`` plus a ``pairs/`` folder of Parquet shards.

``pairs/`` holds the committed shards and nothing else, so pandas, pyarrow.dataset and
``datasets.load_dataset("parquet", data_dir="STORE/pairs")`` read it as exactly the pairs.
A writer holds the store's lock (``judgefree.locks``); it writes each shard to ``.staging/``,
commits the manifest that lists it (with its size and sha256), then moves it into ``pairs/``.
The manifest is the single source of truth: a process killed at any point leaves a store that
reads correctly, and the next writer finishes or discards what the killed one left. Reading
needs only pyarrow and no lock; every shard is checked against its recorded size and digest.
Layout and schema: docs/pair_store.md.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from judgefree.fingerprint import same_model
from judgefree.io import fsync_dir, remove_stale_tmp, write_atomic, write_json_atomic  # noqa: F401  (re-exported)
from judgefree.locks import FolderLock
from judgefree.store import manifest as mf
from judgefree.store.manifest import FORMAT, MANIFEST, PAIRS, PARTS, STAGING  # noqa: F401  (re-exported)
from judgefree.store.records import SCHEMA, SCHEMA_VERSION, PairRecord

log = logging.getLogger(__name__)


class PairStore:
    """Read a pair store: ``PairStore(path).records()`` yields ``PairRecord`` in stored order.

    ``verify=False`` skips the per-shard size and sha256 check (the row count is always checked).
    """

    def __init__(self, path: str | Path, manifest: dict[str, Any] | None = None, *, verify: bool = True):
        self.path = Path(path)
        self.manifest = mf.read_manifest(self.path) if manifest is None else manifest
        self.verify = verify

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

    @property
    def model(self) -> dict[str, Any] | None:
        """Fingerprint of the model that generated the pairs (``judgefree.fingerprint``), if known."""
        return self.manifest.get("model")

    @property
    def pairs_dir(self) -> Path:
        """The folder that reads as exactly the pairs (pandas, pyarrow.dataset, datasets)."""
        return self.path / PAIRS

    def __len__(self) -> int:
        return sum(shard["rows"] for shard in self.manifest["shards"])

    def shard_paths(self) -> list[Path]:
        return [mf.shard_path(self.path, shard["file"]) for shard in self.manifest["shards"]]

    def _tables(self, columns: list[str] | None) -> Iterator[pa.Table]:
        for entry in self.manifest["shards"]:
            yield mf.read_shard(self.path, entry, self.stage, columns, verify=self.verify)

    def table(self, columns: list[str] | None = None) -> pa.Table:
        """All rows as one Arrow table (optionally only ``columns``)."""
        tables = list(self._tables(columns))
        if not tables:
            schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        return pa.concat_tables(tables)

    def records(self, *, kept_only: bool = False) -> Iterator[PairRecord]:
        """Every pair, or with ``kept_only`` the pairs curation kept (needs a curated store)."""
        if kept_only and self.stage != "curated":
            raise ValueError(f"kept_only needs a curated store; {self.path} is '{self.stage}' "
                             "(run `judgefree curate` first, or pass kept_only=False)")
        for table in self._tables(None):
            for row in table.to_pylist():
                if not kept_only or row["kept"]:
                    yield PairRecord(**row)

    def check(self) -> int:
        """Read every shard once (size, sha256, rows); returns the number of pairs."""
        return sum(table.num_rows for table in self._tables(["pair_id"]))


class StoreWriter:
    """Append records to a store, one shard per ``append``; the manifest is rewritten after each.

    ``overwrite=False`` resumes an existing store (its ``settings`` and ``model`` must match);
    ``overwrite=True`` builds a new one in place of the old, which stays valid until the first
    committing ``append`` (or ``commit``) replaces the manifest. ``model`` is the generating
    model's fingerprint (``judgefree.fingerprint.model_fingerprint``) or None.

    The writer holds the store's lock until ``close()`` (or the end of a ``with`` block);
    ``lock`` passes one the caller already holds on ``path``.
    """

    def __init__(self, path: str | Path, *, stage: str, settings: dict[str, Any], overwrite: bool = False,
                 model: dict[str, Any] | None = None, lock: FolderLock | None = None):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"pair store path {self.path} exists and is not a folder")
        self._own_lock = lock is None
        self.lock = FolderLock(self.path).acquire() if lock is None else lock
        try:
            self._open(stage, json.loads(json.dumps(settings)), overwrite, model)
        except BaseException:
            self.close()
            raise

    def _open(self, stage: str, settings: dict[str, Any], overwrite: bool, model: dict[str, Any] | None) -> None:
        existing = self._existing(overwrite)
        if existing is not None and not overwrite:
            if existing["stage"] != stage:
                raise ValueError(f"{self.path} holds a '{existing['stage']}' store, not '{stage}'; use another folder")
            _check_same_settings(self.path, existing["settings"], settings)
            _check_same_model(self.path, existing, model)
            self.manifest = existing
            self._drop_missing_shards()
            for entry in self.manifest["shards"]:  # before anything is deleted: the listed shards are whole
                mf.check_bytes(self.path, entry, mf.locate(self.path, entry).read_bytes(), stage)
        else:
            self.manifest = {
                "format": FORMAT, "schema_version": SCHEMA_VERSION, "stage": stage, "settings": settings,
                "model": model, "shard_prefix": f"shard-{uuid.uuid4().hex[:8]}", "next_shard": 0,
                "shards": [], "skipped": [],
            }
        if existing is not None:
            self._publish(existing)  # finish what a killed writer committed, drop what it did not

    def _existing(self, overwrite: bool) -> dict[str, Any] | None:
        """The store's current manifest (upgraded in place from schema 1), or None if there is none.
        With ``overwrite`` a manifest that cannot be read is ignored: it is about to be replaced."""
        if not (self.path / MANIFEST).exists():
            return None
        try:
            manifest = mf.load_json(self.path)
            if manifest["schema_version"] < SCHEMA_VERSION:
                from judgefree.store.migrate import upgrade

                return upgrade(self.path, manifest)
            manifest = mf.with_parts(self.path, manifest)  # what killed ranks of a job committed
            mf.validate(self.path, manifest)
            return manifest
        except (ValueError, OSError):
            if overwrite:
                return None
            raise

    def _drop_missing_shards(self) -> None:
        """A listed shard whose file was deleted (the repair of a damaged one) leaves the manifest;
        its pairs are no longer stored, so a resumed run generates them again."""
        kept = []
        for entry in self.manifest["shards"]:
            if mf.locate(self.path, entry) is None:
                log.warning("pair store %s: shard %s (%d pairs) is missing and leaves the manifest; "
                            "its pairs will be generated again", self.path, entry["file"], entry["rows"])
            else:
                kept.append(entry)
        self.manifest["shards"] = kept

    def keys(self, column: str = "pair_id") -> set[str]:
        """Values of ``column`` already stored (the resume key)."""
        return set(PairStore(self.path, self.manifest, verify=False).table([column])[column].to_pylist())

    def append(self, records: list[PairRecord], *, commit: bool = True) -> None:
        """Write ``records`` as one new shard; ``commit`` lists it in the manifest right away."""
        if records:
            listed = {entry["file"] for entry in self.manifest["shards"]}
            while True:
                file = f"{PAIRS}/{self.manifest['shard_prefix']}-{self.manifest['next_shard']:05d}.parquet"
                self.manifest["next_shard"] += 1
                if file not in listed:
                    break
            self.manifest["shards"].append(_stage_shard(self.path, file, records))
        if commit:
            self.commit()

    def set_skipped(self, skipped: list[dict[str, str]]) -> None:
        self.manifest["skipped"] = skipped

    def update(self, **entries: Any) -> None:
        """Extra manifest entries (summary, selection); written on the next commit."""
        self.manifest.update(entries)

    def commit(self) -> None:
        """Write manifest.json; it holds every rank's shards (``with_parts`` merged them on open,
        ``fold_parts`` at the end of a job), so the parts go."""
        write_json_atomic(self.path / MANIFEST, self.manifest)
        for path, _ in mf.read_parts(self.path):
            path.unlink()
        self._publish(self.manifest)

    def part(self, rank: int) -> PartWriter:
        """The writer of this process's part in a multi-process job (call after ``commit``)."""
        return PartWriter(self.path, rank, self.manifest, self.lock)

    def fold_parts(self, order: list[str] | None = None) -> None:
        """End of a multi-process job, every rank finished: list every part's shards and skipped
        images in manifest.json (skipped replaced by this job's, sorted by ``order`` of images)."""
        parts = mf.read_parts(self.path)
        listed = {entry["file"] for entry in self.manifest["shards"]}
        skipped: list[dict[str, str]] = []
        new = []
        for _, part in parts:
            new += [entry for entry in part["shards"] if entry["file"] not in listed]
            skipped += part.get("skipped", [])
        # In the order one process writes them (chunk by chunk), so the store reads the same.
        new.sort(key=mf.chunk_order)
        self.manifest["shards"] += [{k: v for k, v in entry.items() if k != "chunk"} for entry in new]
        if order is not None:
            position = {image: i for i, image in enumerate(order)}
            skipped.sort(key=lambda entry: position.get(entry.get("image"), len(position)))
            self.manifest["skipped"] = skipped
        mf.validate(self.path, self.manifest)
        self.commit()

    def _publish(self, manifest: dict[str, Any]) -> None:
        """Make ``pairs/`` hold exactly the shards ``manifest`` lists: remove the others (a
        replaced store, a killed write), move the listed ones still staged into place, clear
        leftovers (unlisted staged shards, temporary files, shards of the schema-1 layout)."""
        pairs, staging = self.path / PAIRS, self.path / STAGING
        listed = {mf.shard_path(self.path, entry["file"]).resolve() for entry in manifest["shards"]}
        # Removals first: a folder reader may see a store shrink for a moment, never two at once.
        for folder in (pairs, self.path):
            for entry in folder.iterdir() if folder.is_dir() else ():
                if _is_shard_name(entry.name) and entry.resolve() not in listed:
                    entry.unlink()
        pairs.mkdir(exist_ok=True)
        for entry in manifest["shards"]:
            staged = mf.staged_path(self.path, entry["file"])
            if staged.is_file():
                final = mf.shard_path(self.path, entry["file"])
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, final)
        if staging.is_dir():
            shutil.rmtree(staging)  # what is left there was never committed
        for folder in (self.path, pairs, self.path / PARTS):
            remove_stale_tmp(folder)
        fsync_dir(pairs)

    def close(self) -> None:
        """Release the store's lock (when this writer took it)."""
        if self._own_lock:
            self.lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PartWriter:
    """One rank's writer in a multi-process job: its shards (``PREFIX-r<rank>-NNNNN.parquet``)
    and its manifest part (``manifest.d/rank-<rank>.json``). It never deletes or renames anything
    but its own staged shards; rank 0 folds the parts into manifest.json once every rank is done.
    ``lock`` is the job's (``judgefree.distributed.lock_folder``)."""

    def __init__(self, path: str | Path, rank: int, manifest: dict[str, Any], lock: Any):
        if not getattr(lock, "held", False):
            raise ValueError(f"a part writer of {path} needs the job's lock of that folder")
        self.path, self.rank, self.lock = Path(path), rank, lock
        self.prefix = manifest["shard_prefix"]
        self._listed = {entry["file"] for entry in manifest["shards"]}
        self.file = mf.part_path(self.path, rank)
        self.state: dict[str, Any] = {"format": FORMAT, "part": rank, "shards": [], "skipped": [],
                                      "next_shard": 0, "done": False}
        if self.file.exists():  # a part nobody folded: rank 0 folds before any rank writes
            raise RuntimeError(f"{self.file} already exists: the parts of an earlier job were not folded")
        self.commit()

    def append(self, records: list[PairRecord], *, skipped: list[dict[str, str]] | None = None,
               chunk: int | None = None) -> None:
        """One new shard of ``records`` (and this rank's skipped images so far), committed;
        ``chunk``: its place in the job's order of chunks (the fold lists shards in that order)."""
        if records:
            while True:
                file = f"{PAIRS}/{self.prefix}-r{self.rank}-{self.state['next_shard']:05d}.parquet"
                self.state["next_shard"] += 1
                if file not in self._listed:
                    break
            entry = _stage_shard(self.path, file, records)
            if chunk is not None:
                entry["chunk"] = chunk
            self.state["shards"].append(entry)
        if skipped is not None:
            self.state["skipped"] = list(skipped)
        self.commit()

    def commit(self, *, done: bool = False) -> None:
        self.state["done"] = done
        (self.path / PAIRS).mkdir(exist_ok=True)
        write_json_atomic(self.file, self.state)
        for entry in self.state["shards"]:  # only this rank's own shards move
            staged = mf.staged_path(self.path, entry["file"])
            if staged.is_file():
                final = mf.shard_path(self.path, entry["file"])
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, final)
        fsync_dir(self.path / PAIRS)


def part_progress(path: str | Path) -> tuple[int, int, int]:
    """(pairs, skipped images, ranks done) over the parts of a running job: rank 0's bar."""
    pairs = skipped = done = 0
    for _, part in mf.read_parts(Path(path)):
        pairs += sum(entry.get("rows", 0) for entry in part["shards"])
        skipped += len(part.get("skipped", []))
        done += bool(part.get("done"))
    return pairs, skipped, done


def _stage_shard(store: Path, file: str, records: list[PairRecord]) -> dict[str, Any]:
    """Write ``records`` as the staged shard ``file``; its manifest entry."""
    table = pa.Table.from_pylist([r.to_row() for r in records], schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    write_atomic(mf.staged_path(store, file), data)
    return mf.shard_entry(file, data, len(records))


def _is_shard_name(name: str) -> bool:
    return name.startswith("shard-") and name.endswith(".parquet")


def _check_same_settings(path: Path, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
    differing = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if differing:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {wanted.get(k)!r}" for k in differing)
        raise ValueError(f"{path} was written with other settings ({detail}); "
                         "rerun with the same settings to resume, or choose another output folder")


def _check_same_model(path: Path, existing: dict[str, Any], model: dict[str, Any] | None) -> None:
    """A resumed store must be continued by the model that started it (same config and weights)."""
    stored = existing.get("model")
    if stored is None:
        if not existing["shards"]:
            existing["model"] = model  # nothing generated yet: the model of this run starts it
        return
    if model is None:
        return
    if not same_model(stored, model):
        raise ValueError(
            f"{path} was generated by another model: {stored.get('path')} (weights sha256 "
            f"{str(stored.get('weights_sha256'))[:12]}...), now {model.get('path')} (weights sha256 "
            f"{str(model.get('weights_sha256'))[:12]}...); its pairs would mix two models: "
            "use another output folder, or resume with the model that started it")
    existing["model"] = model  # the same model, perhaps at another path
