"""Record files: JSONL / JSON in, atomic writes out."""

from __future__ import annotations

import json

import pytest

from judgefree.io import read_records, write_json_atomic, write_jsonl_atomic


def test_jsonl_and_json_forms(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    jsonl = tmp_path / "x.jsonl"
    write_jsonl_atomic(jsonl, rows)
    assert jsonl.read_text() == '{"a": 1}\n{"a": 2}\n'
    assert read_records(jsonl) == rows
    listed = tmp_path / "x.json"
    listed.write_text(json.dumps(rows, indent=2))
    assert read_records(listed) == rows
    wrapped = tmp_path / "w.json"
    write_json_atomic(wrapped, {"captions": rows})
    assert read_records(wrapped) == rows
    single = tmp_path / "one.jsonl"
    single.write_text('{"a": 1}\n')
    assert read_records(single) == [{"a": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "w.json", "x.json", "x.jsonl"]


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="caption file not found"):
        read_records(tmp_path / "none.jsonl", "caption")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_records(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="entry 0 is not a JSON object"):
        read_records(bad)


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_json_atomic(path, {"v": 1})
    write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temp file left
