"""Record files: JSONL / JSON in, atomic writes out."""

from __future__ import annotations

import json
import os

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


def test_a_full_disk_keeps_the_old_file_and_names_the_folder(tmp_path, monkeypatch):
    import errno

    from judgefree import io
    from judgefree.errors import DiskFull, exit_code

    path = tmp_path / "store" / "manifest.json"
    write_json_atomic(path, {"v": 1})

    def full(fd, data):
        os.write(fd, data[: len(data) // 2])  # part of it went out, then the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_all", full)
    with pytest.raises(DiskFull) as raised:
        write_json_atomic(path, {"v": 2, "more": "x" * 1000})
    assert str(raised.value).startswith("disk full: could not write manifest.json in " + str(path.parent))
    assert raised.value.errno == errno.ENOSPC and exit_code(raised.value) == 4
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # the partial temp file is gone


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path):
    from judgefree.io import remove_stale_tmp

    (tmp_path / ".manifest.json.abc123.tmp").write_text("half")
    (tmp_path / ".model.tmp").mkdir()
    (tmp_path / ".model.tmp" / "w.safetensors").write_text("half")
    for keep in ("data.tmp", ".hidden", "manifest.json"):
        (tmp_path / keep).write_text("keep")
    removed = remove_stale_tmp(tmp_path)
    assert sorted(p.name for p in removed) == [".manifest.json.abc123.tmp", ".model.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "data.tmp", "manifest.json"]


def test_printable_path_keeps_valid_names_and_escapes_the_others():
    from judgefree.io import printable_path

    assert printable_path("/photos/été.png") == "/photos/été.png"
    assert printable_path(os.fsdecode(b"/photos/caf\xe9.png")) == "/photos/caf\\xe9.png"
