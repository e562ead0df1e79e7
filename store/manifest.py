"""``manifest.json`` of a pair store: reading it without trusting it.

Everything a manifest says is checked before it is used: it must be a JSON object of this
format and version with the keys a store needs; every shard path must resolve (symlinks
followed) inside the store's ``pairs/`` folder; no shard may be listed twice; and each shard's
size and sha256, recorded when it was written, are checked against the file before its rows
are read (``read_shard``). A manifest that fails names itself and the problem. Layout and keys:
docs/pair_store.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from judgefree.errors import DamagedFile
from judgefree.store.records import SCHEMA, SCHEMA_VERSION

FORMAT = "judgefree-pairs"
MANIFEST = "manifest.json"
PAIRS = "pairs"  # the folder that holds the shards and nothing else
STAGING = ".staging"  # shards written but not yet committed (invisible to folder readers)
PARTS = "manifest.d"  # one manifest part per rank of a multi-process job (rank-<r>.json)
_PART = re.compile(r"rank-(\d{1,6})\.json")
STAGES = ("generated", "curated")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class OldLayout(ValueError):
    """A store of schema version 1 (shards beside manifest.json): a writer upgrades it in
    place (``store/migrate.py``); a reader asks for that upgrade."""


def repair_hint(stage: Any) -> str:
    if stage == "curated":
        return "rerun `judgefree curate` into this folder: it rebuilds the curated store (CLIP scores are cached)"
    return ("delete that file and rerun the `judgefree generate` that wrote the store: it drops the missing "
            "shard from the manifest and generates its pairs again")


def load_json(store: Path) -> dict[str, Any]:
    """The manifest as JSON, checked only for being a JSON object of this format."""
    path = store / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no pair store at {store} ({MANIFEST} missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedFile(f"{path} is not valid JSON ({err}); the store cannot be read: restore that file, "
                          "or write the store again into an empty folder") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} manifest")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DamagedFile(f"{path}: schema_version must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path} has schema version {version}, newer than this judgefree reads ({SCHEMA_VERSION})")
    return manifest


def read_manifest(store: Path) -> dict[str, Any]:
    """The validated manifest of the store at ``store`` (any problem: an error naming it)."""
    manifest = load_json(store)
    if manifest["schema_version"] < SCHEMA_VERSION:
        raise OldLayout(
            f"{store} is a pair store of schema version {manifest['schema_version']} (shards beside "
            f"{MANIFEST}); upgrade it in place with `judgefree store migrate {store}` (the next "
            "`judgefree generate` into it upgrades it too), then read it again")
    manifest = with_parts(store, manifest)
    validate(store, manifest)
    return manifest


def part_path(store: Path, rank: int) -> Path:
    return store / PARTS / f"rank-{rank}.json"


def read_parts(store: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The manifest parts of the ranks of a multi-process job (``manifest.d/rank-<r>.json``), in
    rank order; each an object with a ``shards`` list (checked like the manifest's) and ``skipped``."""
    folder = store / PARTS
    if not folder.is_dir():
        return []
    found = sorted((int(m.group(1)), entry) for entry in folder.iterdir() if (m := _PART.fullmatch(entry.name)))
    parts = []
    for _, path in found:
        try:
            part = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, OSError) as err:
            raise DamagedFile(f"{path} is not valid JSON ({err}); it lists the shards one rank committed: "
                              "restore it, or delete it and rerun the `judgefree generate` to redo them") from None
        if not isinstance(part, dict) or part.get("format") != FORMAT or not isinstance(part.get("shards"), list) \
                or not isinstance(part.get("skipped", []), list):
            raise DamagedFile(f"{path} is not a manifest part of a {FORMAT} store (format, shards, skipped)")
        parts.append((path, part))
    return parts


def with_parts(store: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with the shards and skipped images of every rank's part after its own
    (shards it already lists are not added twice: rank 0 folds parts into manifest.json before it
    deletes them, so a kill in between leaves both)."""
    parts = read_parts(store)
    if not parts:
        return manifest
    merged = dict(manifest)
    listed = {entry.get("file") for entry in manifest["shards"] if isinstance(entry, dict)}
    shards, skipped = list(manifest["shards"]), list(manifest.get("skipped", []))
    new = []
    for _, part in parts:
        new += [entry for entry in part["shards"] if not (isinstance(entry, dict) and entry.get("file") in listed)]
        skipped += part.get("skipped", [])
    shards += [{k: v for k, v in e.items() if k != "chunk"} if isinstance(e, dict) else e
               for e in sorted(new, key=chunk_order)]
    seen, unique = set(), []
    for entry in skipped:  # a rerun may list an image again that a killed rank listed
        key = entry.get("image") if isinstance(entry, dict) else None
        if key not in seen or key is None:
            seen.add(key)
            unique.append(entry)
    merged.update(shards=shards, skipped=unique)
    return merged


def chunk_order(entry: Any) -> int:
    """Where a part's shard goes in the store's order: its ``chunk`` (ranks write chunks out of
    order); shards without one keep their place (a stable sort)."""
    chunk = entry.get("chunk") if isinstance(entry, dict) else None
    return chunk if isinstance(chunk, int) and not isinstance(chunk, bool) else -1


def validate(store: Path, manifest: dict[str, Any]) -> None:
    """Check the keys, the types and every shard path of a version-2 manifest."""
    source = store / MANIFEST

    def bad(problem: str) -> DamagedFile:
        return DamagedFile(f"{source}: {problem}; the store cannot be trusted as it is: "
                           f"{repair_hint(manifest.get('stage'))}")

    if manifest.get("stage") not in STAGES:
        raise bad(f"stage must be one of {', '.join(STAGES)}, got {manifest.get('stage')!r}")
    if not isinstance(manifest.get("settings"), dict):
        raise bad("it has no 'settings' object")
    if "shards" not in manifest:
        raise bad("it has no 'shards' list")
    if not isinstance(manifest["shards"], list):
        raise bad("'shards' is not a list")
    prefix = manifest.get("shard_prefix")
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise bad(f"shard_prefix {prefix!r} is not a plain name (letters, digits, '-', '_')")
    next_shard = manifest.get("next_shard")
    if not isinstance(next_shard, int) or isinstance(next_shard, bool) or next_shard < 0:
        raise bad(f"next_shard must be a non-negative integer, got {next_shard!r}")
    if not isinstance(manifest.get("skipped", []), list):
        raise bad("'skipped' is not a list")
    if manifest.get("model") is not None and not isinstance(manifest["model"], dict):
        raise bad("'model' is neither null nor an object")
    seen: dict[Path, str] = {}
    for index, entry in enumerate(manifest["shards"]):
        if not isinstance(entry, dict):
            raise bad(f"shard entry {index} is not an object")
        for key, kind in (("file", str), ("rows", int), ("bytes", int), ("sha256", str)):
            if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                raise bad(f"shard entry {index} has no valid {key!r}")
        if entry["rows"] < 0 or entry["bytes"] < 0 or not _SHA256.fullmatch(entry["sha256"]):
            raise bad(f"shard entry {index} ({entry['file']}) has a negative count or a malformed sha256")
        try:
            resolved = shard_path(store, entry["file"]).resolve()
        except ValueError as err:
            raise bad(str(err)) from None
        if resolved in seen:
            raise bad(f"{entry['file']} is listed twice (as {seen[resolved]} before): its pairs would be read twice")
        seen[resolved] = entry["file"]


def _inside(store: Path, file: str, folder: str) -> Path:
    """``store / file`` when ``file`` names a .parquet file below ``store / folder``, symlinks
    included; else ValueError."""
    rel = PurePosixPath(file)
    if (rel.is_absolute() or "\\" in file or ".." in rel.parts or len(rel.parts) < 2 or rel.parts[0] != folder
            or rel.suffix != ".parquet"):
        raise ValueError(f"shard path {file!r} is not a .parquet file inside {folder}/")
    target = store.joinpath(*rel.parts)
    base = (store / folder).resolve()
    real = target.resolve()
    if not real.is_relative_to(base) or real == base:
        raise ValueError(f"shard path {file!r} resolves to {real}, outside {base}")
    return target


def shard_path(store: Path, file: str) -> Path:
    """Where a committed shard lives (``STORE/pairs/...``), checked to stay inside the store."""
    return _inside(store, file, PAIRS)


def staged_path(store: Path, file: str) -> Path:
    """Where a shard waits between its write and the publishing after the manifest commit."""
    rel = PurePosixPath(file).relative_to(PAIRS)
    return _inside(store, str(PurePosixPath(STAGING, rel)), STAGING)


def locate(store: Path, entry: dict[str, Any]) -> Path | None:
    """The file holding a listed shard: published, else still staged (a writer stopped between
    its manifest commit and the publishing), else None."""
    final = shard_path(store, entry["file"])
    if final.is_file():
        return final
    staged = staged_path(store, entry["file"])
    return staged if staged.is_file() else None


def shard_entry(file: str, data: bytes, rows: int) -> dict[str, Any]:
    return {"file": file, "rows": rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def check_bytes(store: Path, entry: dict[str, Any], data: bytes, stage: Any) -> None:
    """The shard's bytes are the ones written (size and sha256), else ``DamagedFile``."""
    problem = None
    if len(data) != entry["bytes"]:
        problem = (f"is {len(data)} bytes, the manifest recorded {entry['bytes']} "
                   f"({'truncated' if len(data) < entry['bytes'] else 'replaced or appended to'})")
    elif hashlib.sha256(data).hexdigest() != entry["sha256"]:
        problem = "differs from the sha256 recorded when it was written"
    if problem:
        raise DamagedFile(f"pair store {store}: shard {entry['file']} {problem}. Repair: {repair_hint(stage)}")


def read_shard(store: Path, entry: dict[str, Any], stage: Any, columns: list[str] | None = None, *,
               verify: bool = True):
    """The rows of one listed shard as an Arrow table, after checking size, sha256 and row count."""
    import pyarrow as pa

    from judgefree.io import read_parquet

    path = locate(store, entry)
    if path is None:
        raise DamagedFile(f"pair store {store}: shard {entry['file']} listed by {MANIFEST} is missing (if a "
                          f"writer replaced the store meanwhile, open it again). Repair: {repair_hint(stage)}")
    data = path.read_bytes()
    if verify:
        check_bytes(store, entry, data, stage)
    try:
        table = read_parquet(data, columns=columns, schema=SCHEMA)
    except (pa.ArrowException, OSError) as err:
        raise DamagedFile(f"pair store {store}: shard {entry['file']} is not a readable pair shard ({err}). "
                          f"Repair: {repair_hint(stage)}") from None
    if table.num_rows != entry["rows"]:
        raise DamagedFile(f"pair store {store}: shard {entry['file']} holds {table.num_rows} rows, the manifest "
                          f"recorded {entry['rows']}. Repair: {repair_hint(stage)}")
    return table
