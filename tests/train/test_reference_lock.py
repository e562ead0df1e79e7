"""``STORE/reference_logprobs.parquet`` is shared by every trainer of a store: each one merges
its new entries into what is on disk under the file's lock, so none is lost to another."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from judgefree.errors import FolderLocked
from judgefree.testing.holders import hold_lock
from judgefree.testing.material import make_record, write_store
from judgefree.train.data import load_examples
from judgefree.train.reference import REFERENCE_FILE, fill_reference, _load, model_fingerprint

LOCK_NAME = f".{REFERENCE_FILE}.lock"


def _strip(record):
    return dataclasses.replace(record, chosen_cond_logprobs=[], rejected_cond_logprobs=[])


def _model(folder):
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def _scores(value):
    return lambda examples: [([value] * len(e.chosen_ids), [value] * len(e.rejected_ids)) for e in examples]


def test_two_trainers_filling_at_once_lose_no_entry(tmp_path):
    store = write_store(tmp_path / "curated", [_strip(make_record(i, 1.0, 0.5)) for i in range(4)])
    model = _model(tmp_path / "m")
    everything, _ = load_examples(store)
    first, second = everything[:2], everything[2:]  # e.g. two runs on different selections of one store

    def first_scorer(examples):
        # While the first trainer scores, the second one fills and saves its own entries.
        assert fill_reference(second, store, model, _scores(-2.0)) == 2
        return _scores(-1.0)(examples)

    assert fill_reference(first, store, model, first_scorer) == 2
    saved = _load(store / REFERENCE_FILE, model_fingerprint(model))
    assert len(saved) == 8  # chosen + rejected of all four pairs
    again, _ = load_examples(store)
    assert fill_reference(again, store, model, lambda ex: pytest.fail("every entry should be saved")) == 0
    assert [e.chosen_ref[0] for e in again] == [-1.0, -1.0, -2.0, -2.0]


def test_the_save_waits_for_the_lock_and_names_a_holder_that_keeps_it(tmp_path):
    store = write_store(tmp_path / "curated", [_strip(make_record(0, 1.0, 0.5))])
    model = _model(tmp_path / "m")
    with hold_lock(store, LOCK_NAME) as holder:
        examples, _ = load_examples(store)
        with pytest.raises(FolderLocked, match=f"PID {holder.pid}"):
            fill_reference(examples, store, model, _scores(-1.0), lock_wait=0.3)
        assert not (store / REFERENCE_FILE).exists()
        # A holder that lets go within the wait: the save goes through.
        threading.Timer(0.5, holder.kill).start()
        examples, _ = load_examples(store)
        assert fill_reference(examples, store, model, _scores(-1.0), lock_wait=60) == 1
    assert len(_load(store / REFERENCE_FILE, model_fingerprint(model))) == 2
