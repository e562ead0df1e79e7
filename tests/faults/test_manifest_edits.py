"""Trials: an edited or damaged manifest or shard. ``judgefree generate`` (resuming) and
``judgefree curate`` (reading) exit with code 2 and a message naming the file and the problem,
and delete nothing; a truncated shard's repair (delete it, rerun) restores the uninterrupted rows."""

from __future__ import annotations

import json
import shutil

import pytest

from judgefree.cli.main import main
from judgefree.store.pair_store import MANIFEST, PAIRS, PairStore
from judgefree.testing.store_checks import assert_valid_store, rows


def _edit(change):
    def apply(store):
        manifest = json.loads((store / MANIFEST).read_text())
        change(manifest)
        (store / MANIFEST).write_text(json.dumps(manifest))
    return apply


def _entry(key, value):
    return _edit(lambda m: m["shards"][0].update({key: value}))


def _truncate(store):
    shard = PairStore(store).shard_paths()[1]
    shard.write_bytes(shard.read_bytes()[:-100])


EDITS = {
    "shard_prefix ../x": (_edit(lambda m: m.update(shard_prefix="../x")), "shard_prefix '../x' is not a plain name"),
    "a file of another run": (_entry("file", "pairs/../../other/pairs/shard-0.parquet"), "not a .parquet file inside"),
    "a shard listed twice": (_edit(lambda m: m["shards"].append(m["shards"][0])), "is listed twice"),
    "an entry pointing at a non-shard": (_entry("file", "pairs/notes.txt"), "not a .parquet file inside pairs/"),
    "invalid JSON": (lambda store: (store / MANIFEST).write_text("{not json"), "is not valid JSON"),
    "no shards key": (_edit(lambda m: m.pop("shards")), "has no 'shards' list"),
    "a row count edited": (_entry("rows", 7), "holds 2 rows, the manifest recorded 7"),
    "a truncated shard": (_truncate, "bytes, the manifest recorded .* \\(truncated\\)"),
}


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".judgefree.lock"}  # the lock file records its last holder


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_store_is_refused_by_generate_and_curate(tmp_path, uninterrupted, generate_argv, tiny_clip_files,
                                                        capsys, edit):
    change, message = EDITS[edit]
    store = tmp_path / "pairs"
    shutil.copytree(uninterrupted, store)
    change(store)
    before = _files(store)
    assert main(generate_argv(store)) == 2
    err = capsys.readouterr().err
    assert err.startswith("judgefree generate: error: ") and len(err.strip().splitlines()) == 1
    assert str(store) in err
    import re

    assert re.search(message, err), err
    config, weights = tiny_clip_files
    assert main(["curate", "--pairs", str(store), "--out", str(tmp_path / "curated"), "--clip", str(config),
                 "--clip-weights", str(weights), "--device", "cpu", "--no-progress"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert _files(store) == before  # nothing deleted, nothing rewritten


def test_a_truncated_shard_is_repaired_by_deleting_it_and_rerunning(tmp_path, uninterrupted, generate_argv, capsys):
    store = tmp_path / "pairs"
    shutil.copytree(uninterrupted, store)
    _truncate(store)
    assert main(generate_argv(store)) == 2
    err = capsys.readouterr().err
    shard = PairStore(store).shard_paths()[1]
    assert f"{PAIRS}/{shard.name}" in err and "delete that file and rerun" in err
    shard.unlink()  # the repair the message offers
    assert main(generate_argv(store)) == 0
    assert "1 pairs generated, 5 already in" in capsys.readouterr().out
    assert_valid_store(store)
    assert sorted(rows(store), key=lambda r: r["pair_id"]) == sorted(rows(uninterrupted), key=lambda r: r["pair_id"])
