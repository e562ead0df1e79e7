"""File helpers every stage shares: writes that never leave half a file (or half a folder)
behind, and reading JSON / JSONL record files. Everyone imports them from here."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Image files a folder listing accepts (generation, the demo).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and
    ``os.replace``: a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
