"""DPO training on the tiny LLaVA with its engine-generated pairs: the loss falls and the
reward margin rises (full fine-tuning and LoRA), metrics are logged, finished runs are skipped
and a rerun with other settings is refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
from judgefree.testing.material import load_weights, write_store

from judgefree.train.config import TrainConfig
from judgefree.train.trainer import train_dpo


def _config(finetune: str, **overrides) -> TrainConfig:
    settings = dict(finetune=finetune, learning_rate=1e-3 if finetune == "lora" else 3e-4, epochs=5,
                    batch_size=4, micro_batch_size=2, warmup_ratio=0.0, scheduler="constant", save_every=100)
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_dpo_lowers_the_loss_and_raises_the_margin(train_llava_dir, llava_store, tmp_path, finetune):
    result = train_dpo(train_llava_dir, llava_store, tmp_path / "run", _config(finetune), progress=False)
    losses = [m["loss"] for m in result.metrics]
    margins = [m["rewards/margins"] for m in result.metrics]
    assert result.steps == 5 and len(losses) == 5 and result.reference_computed == 0
    # Step 1 sees the untouched model: policy == reference, so the loss is log 2 and the margin 0.
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4) and margins[0] == pytest.approx(0, abs=1e-3)
    assert losses[-1] < losses[0] - 0.05, losses
    assert margins[-1] > 0.1 and result.metrics[-1]["rewards/accuracies"] >= 0.75, margins
    last = result.metrics[-1]
    assert last["tokens"] > 0 and last["tokens_per_s"] > 0 and last["peak_memory_gib"] > 0
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == result.metrics
    assert (result.model_dir / "config.json").is_file() and (result.model_dir / "model.safetensors").is_file()


def test_a_finished_run_is_skipped_and_other_settings_are_refused(train_llava_dir, llava_records, tmp_path):
    store = write_store(tmp_path / "curated", llava_records)
    config = _config("lora", epochs=1)
    first = train_dpo(train_llava_dir, store, tmp_path / "run", config, progress=False)
    again = train_dpo(train_llava_dir, store, tmp_path / "run", config, progress=False)
    assert again.already_done and not first.already_done and again.metrics == first.metrics
    # A train.json from before the logprobs setting existed: the old default, not a mismatch.
    manifest = tmp_path / "run" / "train.json"
    old = json.loads(manifest.read_text())
    del old["logprobs"]
    manifest.write_text(json.dumps(old))
    assert train_dpo(train_llava_dir, store, tmp_path / "run", config, progress=False).already_done
    with pytest.raises(ValueError, match="logprobs"):
        train_dpo(train_llava_dir, store, tmp_path / "run", _config("lora", epochs=1, logprobs="eager"), progress=False)
    # A finished run is reused for the same settings and pairs only: never silently for others.
    with pytest.raises(ValueError, match="beta"):
        train_dpo(train_llava_dir, store, tmp_path / "run", _config("lora", epochs=1, beta=0.5), progress=False)
    write_store(store, [r.swapped_roles() for r in llava_records])  # curation redone, same path and count
    with pytest.raises(ValueError, match="pairs_digest"):
        train_dpo(train_llava_dir, store, tmp_path / "run", config, progress=False)
    write_store(store, llava_records)
    (tmp_path / "run" / "result.json").unlink()  # as if stopped before the end
    with pytest.raises(ValueError, match="beta"):
        train_dpo(train_llava_dir, store, tmp_path / "run", _config("lora", epochs=1, beta=0.5), progress=False)


def test_micro_batches_accumulate_to_the_full_batch(train_llava_dir, varied_store, tmp_path):
    """Unequal micro-batches (3 + 1 pairs) with different padding give the step of one batch of 4:
    each micro-batch's mean loss is weighted by its share of the pairs. Losses and gradient norms
    to 1e-5; weights to 1e-4 (of a 5e-2 change). Adam's epsilon is raised: with the default 1e-8,
    the first steps move each weight by about lr * sign(g), and a near-zero gradient whose sign
    the summation order (micro-batching, thread count) flips moves it the other way."""
    runs = {}
    for micro in (4, 3, 1):
        config = _config("lora", max_steps=2, epochs=2, micro_batch_size=micro, learning_rate=1e-2, adam_eps=1e-3)
        runs[micro] = train_dpo(train_llava_dir, varied_store, tmp_path / f"m{micro}", config, progress=False)
    whole = runs[4].metrics
    assert whole[1]["loss"] < whole[0]["loss"] - 1e-3  # the first step changed the model
    for micro in (3, 1):
        for ours, theirs in zip(runs[micro].metrics, whole):
            for key in ("loss", "rewards/margins", "grad_norm"):
                assert ours[key] == pytest.approx(theirs[key], abs=1e-5), (micro, key)
        ours, theirs = load_weights(runs[micro].model_dir), load_weights(runs[4].model_dir)
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], atol=1e-4, rtol=0, msg=name)


def test_bad_batch_geometry_is_reported(train_llava_dir, llava_store, tmp_path):
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_dpo(train_llava_dir, llava_store, tmp_path / "run", _config("lora", batch_size=16), progress=False)


def test_auto_choices_are_pinned_across_world_sizes(llava_store, tmp_path):
    """finetune="auto" is LoRA in one process and full fine-tuning under torchrun: a run resumed
    at another world size must be refused, not load a LoRA checkpoint into a full run."""
    from judgefree.train.config import resume_differences
    from judgefree.train.data import load_examples
    from judgefree.train.distributed import DistContext
    from judgefree.train.trainer import _Run

    examples, _ = load_examples(llava_store)

    def settings(config, world):
        ctx = DistContext(0, world, torch.device("cpu"))
        return _Run("model", llava_store, tmp_path, config, ctx, False, None, 0.0)._settings(examples)

    auto = TrainConfig(batch_size=4)
    assert resume_differences(settings(auto, 1), settings(auto, 2)) == ["finetune_resolved", "learning_rate_resolved"]
    pinned = TrainConfig(batch_size=4, finetune="lora")
    assert resume_differences(settings(pinned, 1), settings(pinned, 2)) == []
