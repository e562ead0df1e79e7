"""DPO training on the tiny LLaVA with its engine-generated pairs: the loss falls and the
reward margin rises (full fine-tuning and LoRA), metrics are logged, finished runs are skipped
and a rerun with other settings is refused."""

from __future__ import annotations

import json
import math

import pytest

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


def test_a_finished_run_is_skipped_and_other_settings_are_refused(train_llava_dir, llava_store, tmp_path):
    config = _config("lora", epochs=1)
    first = train_dpo(train_llava_dir, llava_store, tmp_path / "run", config, progress=False)
    again = train_dpo(train_llava_dir, llava_store, tmp_path / "run", config, progress=False)
    assert again.already_done and not first.already_done and again.metrics == first.metrics
    (tmp_path / "run" / "result.json").unlink()  # as if stopped before the end
    with pytest.raises(ValueError, match="beta"):
        train_dpo(train_llava_dir, llava_store, tmp_path / "run", _config("lora", epochs=1, beta=0.5),
                  progress=False)


def test_bad_batch_geometry_is_reported(train_llava_dir, llava_store, tmp_path):
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_dpo(train_llava_dir, llava_store, tmp_path / "run", _config("lora", batch_size=16), progress=False)
