"""A store's recorded reference log-probs belong to the model that generated it: training
another model on them is refused (naming both fingerprints) unless the reference is recomputed."""

from __future__ import annotations

import dataclasses
import math

import pytest

from judgefree.fingerprint import model_fingerprint
from judgefree.store.pair_store import StoreWriter
from judgefree.train.config import TrainConfig
from judgefree.train.trainer import train_dpo


def _store(folder, records, model):
    records = [dataclasses.replace(r, kept=True, split=0) for r in records]
    with StoreWriter(folder, stage="curated", settings={"test": True}, overwrite=True, model=model) as writer:
        writer.append(records)
    return folder


def _other_model(tmp_path):
    folder = tmp_path / "other-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llava"}')
    (folder / "model.safetensors").write_bytes(b"the weights of another model")
    return model_fingerprint(folder)


def _config(**overrides):
    return TrainConfig(finetune="lora", max_steps=1, batch_size=4, micro_batch_size=2, warmup_ratio=0.0, **overrides)


def test_a_store_of_another_model_is_refused_naming_both_fingerprints(train_llava_dir, llava_records, tmp_path):
    other = _other_model(tmp_path)
    store = _store(tmp_path / "curated", llava_records, other)
    mine = model_fingerprint(train_llava_dir)
    with pytest.raises(ValueError) as caught:
        train_dpo(train_llava_dir, store, tmp_path / "run", _config(), progress=False)
    message = str(caught.value)
    assert other["digest"] in message and mine["digest"] in message
    assert "--recompute-reference" in message
    assert not (tmp_path / "run" / "result.json").exists()


def test_recompute_reference_trains_another_models_store_on_its_own_reference(train_llava_dir, llava_records,
                                                                              tmp_path):
    # Recorded log-probs that are not this model's: used as the reference they would move the
    # first step's loss away from log 2; recomputed, policy == reference at step 1.
    shifted = [dataclasses.replace(r, chosen_cond_logprobs=[v - 1.0 for v in r.chosen_cond_logprobs])
               for r in llava_records]
    store = _store(tmp_path / "curated", shifted, _other_model(tmp_path))
    result = train_dpo(train_llava_dir, store, tmp_path / "run", _config(recompute_reference=True), progress=False)
    assert result.reference_computed == 4
    assert result.metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_the_generating_model_trains_on_its_recorded_reference(train_llava_dir, llava_records, tmp_path):
    store = _store(tmp_path / "curated", llava_records, model_fingerprint(train_llava_dir))
    result = train_dpo(train_llava_dir, store, tmp_path / "run", _config(), progress=False)
    assert result.reference_computed == 0
    assert result.metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)


def test_the_option_reaches_the_config_and_old_runs_resume():
    from judgefree.train.arguments import train_config
    from judgefree.train.config import resume_differences
    from judgefree.train.launch import build_parser

    base = ["--model", "m", "--pairs", "p", "--out", "o"]
    assert train_config(build_parser().parse_args(base + ["--recompute-reference"])).recompute_reference is True
    current = train_config(build_parser().parse_args(base)).to_manifest()
    assert current["recompute_reference"] is False
    older = {k: v for k, v in current.items() if k != "recompute_reference"}  # a train.json from before the option
    assert resume_differences(older, current) == []
    assert resume_differences(older, {**current, "recompute_reference": True}) == ["recompute_reference"]


def test_under_torchrun_every_rank_gets_the_refusal(train_llava_dir, llava_records, tmp_path):
    """Rank 0 alone reads the weights; the verdict reaches rank 1, which must not wait forever."""
    import os
    import subprocess
    import sys

    other = _other_model(tmp_path)
    store = _store(tmp_path / "curated", llava_records, other)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "judgefree.train.launch", "--model", str(train_llava_dir), "--pairs", str(store),
               "--out", str(tmp_path / "two"), "--device", "cpu", "--no-progress", "--batch-size", "2",
               "--micro-batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    # Both ranks stop with the one-line error (their lines may interleave: count, don't split).
    assert done.stderr.count("judgefree.train.launch: error:") == 2, done.stderr[-3000:]
    assert done.stderr.count(f"(fingerprint {other['digest']})") == 2
