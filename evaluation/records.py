"""Reading JSON / JSONL record files and writing them atomically (temp file + os.replace),
so an interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from judgefree.io import write_atomic


def read_records(path: str | Path, what: str = "records") -> list[dict[str, Any]]:
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


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_atomic(Path(path), json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object a line, atomically."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    write_atomic(Path(path), "".join(lines))
