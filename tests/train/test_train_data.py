"""Batches, step plans, store loading and settings validation (no model involved)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from judgefree.testing.material import make_record
from judgefree.testing.material import write_store

from judgefree.train.config import TrainConfig, resume_differences
from judgefree.train.data import IGNORE_INDEX, DPOExample, StepPlan, collate, load_examples


def test_collate_feeds_prompt_plus_response_and_targets_the_next_token():
    examples = [DPOExample("a", [1, 2, 3], [10, 11], [20], [-1.0, -2.0], [-3.0], None),
                DPOExample("b", [4], [12, 13, 14], [21, 22], [-0.5, -0.5, -0.25], [-1.0, -1.0], None)]
    batch = collate(examples, pad_id=0)
    # rows: chosen a, chosen b, rejected a, rejected b; the last response token is never fed
    assert batch.input_ids.tolist() == [[1, 2, 3, 10], [4, 12, 13, 0], [1, 2, 3, 0], [4, 21, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0]]
    X = IGNORE_INDEX
    assert batch.targets.tolist() == [[X, X, 10, 11], [12, 13, 14, X], [X, X, 20, X], [21, 22, X, X]]
    assert batch.ref_chosen.tolist() == [-3.0, -1.25] and batch.ref_rejected.tolist() == [-3.0, -2.0]
    assert batch.num_tokens == 12 and batch.pixel_values is None


def test_collate_leaves_reference_unset_when_any_pair_lacks_it_and_needs_images_for_llava():
    examples = [DPOExample("a", [1], [2], [3], [-1.0], None, "x.png")]
    batch = collate(examples, pad_id=0, pixels=lambda path: torch.zeros(3, 2, 2))
    assert batch.ref_chosen is None and batch.pixel_values.shape == (1, 3, 2, 2)
    with pytest.raises(ValueError, match="has no image"):
        collate([dataclasses.replace(examples[0], image=None)], pad_id=0, pixels=lambda path: torch.zeros(3))
    with pytest.raises(ValueError, match="at least one"):
        collate([], pad_id=0)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_step_plan_shards_each_global_batch_exactly(world):
    plan = StepPlan(num_examples=19, batch_size=4, epochs=3, seed=7, max_steps=None)
    assert plan.steps_per_epoch == 4 and plan.total_steps == 12
    for step in range(plan.total_steps):
        whole = plan.indices(step)
        parts = [plan.indices(step, rank, world) for rank in range(world)]
        assert sum(parts, []) == whole and len(set(whole)) == 4
    epoch0 = sum((plan.indices(s) for s in range(4)), [])
    epoch1 = sum((plan.indices(s) for s in range(4, 8)), [])
    assert len(set(epoch0)) == 16 and epoch0 != epoch1  # a fresh order per epoch, no repeats inside one
    assert StepPlan(19, 4, 3, 7, max_steps=5).total_steps == 5
    with pytest.raises(ValueError, match="outside"):
        plan.indices(12)


def test_load_examples_takes_kept_pairs_and_flags_missing_references(tmp_path):
    records = [dataclasses.replace(make_record(i, 1.0, 0.5), kept=i != 1) for i in range(4)]
    records[2] = dataclasses.replace(records[2], chosen_cond_logprobs=[])  # no reference recorded
    records[3] = dataclasses.replace(records[3], rejected_cond_logprobs=[-1.0])  # one short of the tokens
    store = write_store(tmp_path / "curated", records)
    examples, skipped = load_examples(store)
    assert [e.pair_id for e in examples] == ["p0", "p2", "p3"] and skipped == []
    assert examples[0].chosen_ref == [-0.5] and examples[0].rejected_ref == [-1.5, -2.0]
    assert examples[1].chosen_ref is None and examples[2].rejected_ref is None
    assert examples[0].image == "/img/0.png" and examples[0].prompt_ids == [1, 2]
    assert len(load_examples(store, kept_only=False)[0]) == 4


def test_load_examples_refuses_unverified_stores_and_skips_empty_responses(tmp_path):
    generated = write_store(tmp_path / "pairs", [make_record(0, None, None)], stage="generated")
    with pytest.raises(ValueError, match="curated store"):
        load_examples(generated)
    assert len(load_examples(generated, kept_only=False)[0]) == 1
    empty = dataclasses.replace(make_record(1, 1.0, 0.0), chosen_token_ids=[], chosen_cond_logprobs=[])
    store = write_store(tmp_path / "curated", [make_record(0, 1.0, 0.0), empty])
    examples, skipped = load_examples(store)
    assert [e.pair_id for e in examples] == ["p0"]
    assert skipped == [{"pair_id": "p1", "reason": "a response has no tokens"}]
    with pytest.raises(ValueError, match="no pair to train on"):
        load_examples(write_store(tmp_path / "none", [empty]))


@pytest.mark.parametrize("field, value, message", [
    ("loss_type", "kto", "loss_type"), ("beta", 0.0, "beta"), ("finetune", "qlora", "finetune"),
    ("batch_size", 0, "batch_size"), ("micro_batch_size", 0, "micro_batch_size"), ("max_steps", 0, "max_steps"),
    ("learning_rate", -1.0, "learning_rate"), ("warmup_ratio", 1.0, "warmup_ratio"), ("dtype", "fp8", "dtype"),
    ("scheduler", "poly", "scheduler"), ("lora_targets", (), "lora_targets"), ("lora_dropout", 1.0, "lora_dropout"),
    ("label_smoothing", 0.6, "label_smoothing"),
])
def test_train_config_names_the_bad_setting(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_train_config_checks_label_smoothing_per_loss_type():
    """The loss's own ranges, before a model loads (the first step would fail otherwise)."""
    TrainConfig(loss_type="sigmoid", label_smoothing=0.5)
    TrainConfig(loss_type="robust", label_smoothing=0.2)
    for loss_type, value in (("robust", 0.5), ("ipo", 0.1), ("hinge", 0.1), ("sigmoid", -0.1)):
        with pytest.raises(ValueError, match="label_smoothing"):
            TrainConfig(loss_type=loss_type, label_smoothing=value)


def test_train_config_resolves_auto_choices_and_compares_resumable_settings():
    config = TrainConfig()
    assert config.resolved_finetune(1) == "lora" and config.resolved_finetune(8) == "full"
    assert config.resolved_learning_rate(1) == 5e-5 and config.resolved_learning_rate(8) == 5e-7
    assert TrainConfig(learning_rate=1e-3).resolved_learning_rate(8) == 1e-3
    stored = config.to_manifest()
    assert resume_differences(stored, TrainConfig(save_every=7).to_manifest()) == []
    assert resume_differences(stored, TrainConfig(beta=0.2, epochs=2).to_manifest()) == ["beta", "epochs"]


def test_a_stored_run_from_before_the_logprobs_setting_resumes_with_its_old_default():
    """train.json written before TrainConfig.logprobs existed lacks the key: the run used the
    linear_logprobs kernel ("auto"), so resuming it with "auto" is no mismatch, another path is."""
    stored = TrainConfig().to_manifest()
    del stored["logprobs"]
    assert resume_differences(stored, TrainConfig().to_manifest()) == []
    assert resume_differences(stored, TrainConfig(logprobs="eager").to_manifest()) == ["logprobs"]
    stored_eager = {**stored, "logprobs": "eager"}  # a stored value always wins over the old default
    assert resume_differences(stored_eager, TrainConfig().to_manifest()) == ["logprobs"]


def test_a_changed_or_missing_image_is_refused(tmp_path):
    """Reference log-probs were computed on the generated image's pixels: a file changed or
    gone since then must stop training with a message naming it."""
    from PIL import Image

    from judgefree.store.records import file_sha256
    from judgefree.train.data import check_images_unchanged

    path = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    example = DPOExample(pair_id="p0", prompt_ids=[1], chosen_ids=[2], rejected_ids=[3], chosen_ref=None, rejected_ref=None,
                         image=str(path), image_sha256=file_sha256(str(path)))
    check_images_unchanged([example, example])
    Image.new("RGB", (8, 8), (99, 20, 30)).save(path)
    with pytest.raises(ValueError, match="photo.png changed since pair p0"):
        check_images_unchanged([example])
    path.unlink()
    with pytest.raises(FileNotFoundError, match="photo.png of pair p0 cannot be read"):
        check_images_unchanged([example])


def _curated(folder, records, selection):
    """A curated store whose kept / split / dropped marks come from curation's own selection."""
    from judgefree.curate.selection import select
    from judgefree.store.pair_store import StoreWriter

    with StoreWriter(folder, stage="curated", settings={"test": True}, overwrite=True) as writer:
        writer.append(select(records, selection))
    return folder


@pytest.mark.parametrize("mode, verified", [("swap", ["p0", "p1", "p2"]), ("drop", ["p0", "p1"])])
def test_all_pairs_trains_on_every_verified_pair_and_never_on_a_dropped_one(tmp_path, mode, verified):
    from judgefree.curate.selection import Selection

    empty = dataclasses.replace(make_record(3, None, 0.5), chosen_text=" . ", chosen_segments=0)  # tokens, no text
    records = [make_record(0, 0.9, 0.1), make_record(1, 0.5, 0.45), make_record(2, 0.2, 0.8),  # p2: CLIP disagrees
               empty, make_record(4, None, None)]  # p4: not scored (an unreadable image)
    store = _curated(tmp_path / "curated", records, Selection(splits=2, keep_splits=(1,), on_disagreement=mode))
    kept, _ = load_examples(store)
    assert [e.pair_id for e in kept] == ["p0"]  # the largest difference, the one kept split
    every, skipped = load_examples(store, kept_only=False)
    assert [e.pair_id for e in every] == verified  # whatever their split
    dropped = [{"pair_id": "p3", "reason": "dropped by curation: the chosen response is empty"},
               {"pair_id": "p4", "reason": "dropped by curation: not scored"}]
    if mode == "drop":
        dropped.insert(0, {"pair_id": "p2", "reason": "dropped by curation: CLIP disagreed with the h order"})
    assert skipped == dropped
