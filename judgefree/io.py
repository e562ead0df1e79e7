"""File helpers every stage shares: writes that never leave half a file (or half a folder)
behind, and reading JSON / JSONL record files. Everyone imports them from here.

A write that runs out of space raises ``judgefree.errors.DiskFull`` naming the folder; the file
it was replacing is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from judgefree.errors import DiskFull, is_disk_full

# Image files a folder listing accepts (generation, the demo).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (the one place a file's bytes go out: tests
    inject a full disk here)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and
    ``os.replace``: a reader sees the old file or the new one, never a part. The temporary
    file is named ``.NAME.*.tmp``; ``remove_stale_tmp`` clears those a killed process left."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        if is_disk_full(err):
            raise _disk_full(err, path) from err
        raise
    try:
        try:
            _write_all(fd, data.encode("utf-8") if isinstance(data, str) else data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself survives a power cut
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise _disk_full(err, path) from err
        raise


def _disk_full(err: OSError, path: Path) -> DiskFull:
    return DiskFull(f"disk full: could not write {path.name} in {path.parent} ({err.strerror}); "
                    "what was there is kept as it was: free some space and rerun to continue",
                    str(path.parent), err.errno)


def is_stale_tmp(name: str) -> bool:
    """A temporary file of ``write_atomic`` (``.NAME.*.tmp``) or ``building_folder`` (``.NAME.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders a killed writer left in ``folder`` (not below it);
    call it only while holding the folder's lock. Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if is_stale_tmp(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def read_parquet(source: str | os.PathLike | bytes, **options: Any):
    """``pyarrow.parquet.read_table`` on a path or the file's bytes, single-threaded.

    Arrow's threaded reader can abort the interpreter at exit (std::terminate in its thread
    pool's teardown, apache/arrow#34314: seen here in about 1 of 12 runs whose stderr is a
    pipe); every file read here is one modest shard, so threads buy little.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(source, bytes):
        source = pa.BufferReader(source)
    return pq.read_table(source, use_threads=False, **options)


def printable_path(path: str | os.PathLike) -> str:
    """``path`` as valid UTF-8 text: bytes of a file name that are not UTF-8 become ``\\xNN``
    (a listing or a manifest can always hold it)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def json_text(obj: Any) -> str:
    """The one JSON layout every file of the project uses: indented, keys sorted, UTF-8 kept."""
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, json_text(obj))


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """One JSON object a line, atomically."""
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_records(path: str | os.PathLike, what: str = "records") -> list[dict[str, Any]]:
    """Records from a JSONL file (one object a line) or a JSON list / ``{"captions": [...]}``."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} file not found: {file}")
    text = file.read_text(encoding="utf-8")
    try:
        data = json.loads(text)  # a JSON list, a {"captions": [...]} object, or a 1-line JSONL
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        records = data
    elif isinstance(data, dict):
        records = data["captions"] if isinstance(data.get("captions"), list) else [data]
    else:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{file} line {number} is not valid JSON: {err}") from None
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{file}: {what} entry {index} is not a JSON object")
    return list(records)


def fsync_tree(folder: Path) -> None:
    """fsync every file below ``folder``, then the folders themselves."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with open(Path(root) / name, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(root))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def building_folder(final: str | os.PathLike, *, tmp: str | os.PathLike | None = None) -> Iterator[Path]:
    """Build a folder under a temporary name, then put it in place of ``final`` in one rename.

    ``with building_folder(out) as tmp: write into tmp`` -- on success the files are fsynced and
    ``tmp`` replaces ``final`` (an old ``final`` is removed first); on an exception ``tmp`` is
    removed and ``final`` is left as it was. ``tmp`` defaults to ``.NAME.tmp`` beside ``final``.
    """
    final = Path(final)
    tmp = Path(tmp) if tmp is not None else final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(final.parent)
