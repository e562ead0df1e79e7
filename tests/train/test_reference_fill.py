"""Stores without reference log-probs: one no-grad pass computes them, they are saved beside
the store and reused; a different model, or a scorer returning the wrong shape, is caught."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from judgefree.testing.material import make_record
from judgefree.testing.material import write_store

from judgefree.train.config import TrainConfig
from judgefree.train.data import load_examples
from judgefree.train.reference import REFERENCE_FILE, fill_reference, model_fingerprint
from judgefree.train.trainer import train_dpo


def _strip(record):
    return dataclasses.replace(record, chosen_cond_logprobs=[], rejected_cond_logprobs=[])


def _fake_model(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(content)
    return folder


class CountingScorer:
    def __init__(self):
        self.calls = []

    def __call__(self, examples):
        self.calls.append([e.pair_id for e in examples])
        return [([-0.25 * (k + 1) for k in range(len(e.chosen_ids))], [-0.5] * len(e.rejected_ids)) for e in examples]


def test_computed_once_saved_beside_the_store_and_reused(tmp_path):
    records = [make_record(0, 1.0, 0.5), _strip(make_record(1, 1.0, 0.5)), _strip(make_record(2, 0.2, 0.9))]
    store = write_store(tmp_path / "curated", records)
    model = _fake_model(tmp_path / "m", b"weights-A")
    scorer = CountingScorer()
    examples, _ = load_examples(store)
    assert fill_reference(examples, store, model, scorer) == 2
    assert scorer.calls == [["p1", "p2"]]  # p0 had its own
    assert examples[0].chosen_ref == [-0.5] and examples[1].chosen_ref == [-0.25] and examples[2].rejected_ref == [-0.5, -0.5]
    assert pq.read_table(store / REFERENCE_FILE).num_rows == 4  # two sequences per computed pair

    again, _ = load_examples(store)
    assert fill_reference(again, store, model, scorer) == 0 and len(scorer.calls) == 1
    assert [e.chosen_ref for e in again] == [e.chosen_ref for e in examples]

    swapped = [records[0], records[1].swapped_roles(), records[2]]  # curation may exchange the roles
    flipped, _ = load_examples(write_store(tmp_path / "curated", swapped))
    assert fill_reference(flipped, store, model, scorer) == 0
    assert flipped[1].rejected_ref == examples[1].chosen_ref

    other = _fake_model(tmp_path / "m2", b"weights-B")  # another model: its own reference
    fresh, _ = load_examples(store)
    assert fill_reference(fresh, store, other, scorer) == 2 and len(scorer.calls) == 2


def test_equal_responses_to_different_images_keep_their_own_reference(tmp_path):
    """LLaVA prompts of two images have the same ids (placeholders): the image must be in the key."""
    twin = dataclasses.replace(make_record(1, 1.0, 0.5), chosen_token_ids=[10], rejected_token_ids=[20, 21])
    records = [_strip(make_record(0, 1.0, 0.5)), _strip(twin)]  # same ids as pair 0, another image
    assert records[0].prompt_token_ids == records[1].prompt_token_ids and records[0].image != records[1].image
    store = write_store(tmp_path / "curated", records)

    def per_image(examples):  # log-probs that depend on the picture, as a vision model's do
        value = {"s0": -1.0, "s1": -3.0}
        return [([value[e.image_sha256]] * len(e.chosen_ids), [value[e.image_sha256]] * len(e.rejected_ids))
                for e in examples]

    examples, _ = load_examples(store)
    assert examples[0].chosen_ids == examples[1].chosen_ids
    assert fill_reference(examples, store, _fake_model(tmp_path / "m", b"w"), per_image) == 2
    assert examples[0].chosen_ref == [-1.0] and examples[1].chosen_ref == [-3.0]
    again, _ = load_examples(store)
    fill_reference(again, store, tmp_path / "m", lambda ex: pytest.fail("should reuse the saved reference"))
    assert again[0].chosen_ref == [-1.0] and again[1].chosen_ref == [-3.0]


def test_the_fingerprint_sees_a_change_anywhere_in_the_weights(tmp_path):
    """A LoRA-merged successor keeps the first tensors (embeddings, lm_head: often the first
    hundreds of MiB of a file) and changes only later bytes: its reference must not be reused."""
    head = bytes(range(256)) * 8192  # 2 MiB the two models share
    before = _fake_model(tmp_path / "m0", head + b"q_proj-before")
    after = _fake_model(tmp_path / "m1", head + b"q_proj-after!")
    assert model_fingerprint(before) != model_fingerprint(after)
    assert model_fingerprint(before) == model_fingerprint(_fake_model(tmp_path / "copy", head + b"q_proj-before"))


def test_a_scorer_returning_the_wrong_number_of_logprobs_is_an_error(tmp_path):
    store = write_store(tmp_path / "curated", [_strip(make_record(0, 1.0, 0.5))])
    examples, _ = load_examples(store)
    with pytest.raises(RuntimeError, match="wrong number"):
        fill_reference(examples, store, _fake_model(tmp_path / "m", b"x"), lambda ex: [([-1.0, -1.0], [-1.0])])
    assert not (store / REFERENCE_FILE).exists()


def test_trainer_computes_the_missing_reference_with_the_initial_model(train_llava_dir, llava_records, tmp_path):
    store = write_store(tmp_path / "curated", [_strip(r) for r in llava_records])
    config = TrainConfig(finetune="lora", max_steps=1, batch_size=4, micro_batch_size=2, warmup_ratio=0.0)
    result = train_dpo(train_llava_dir, store, tmp_path / "run", config, progress=False)
    assert result.reference_computed == 4 and (store / REFERENCE_FILE).is_file()
    assert result.metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 1
    examples, _ = load_examples(store)
    fill_reference(examples, store, train_llava_dir, lambda ex: pytest.fail("should reuse the saved reference"))
    for example, record in zip(examples, llava_records):  # the engine's numbers, recomputed by the trainer
        torch.testing.assert_close(torch.tensor(example.chosen_ref), torch.tensor(record.chosen_cond_logprobs),
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.tensor(example.rejected_ref), torch.tensor(record.rejected_cond_logprobs),
                                   atol=1e-4, rtol=0)
