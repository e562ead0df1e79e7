"""bf16 training paths on the CPU (the GPU default: LoRA over a bf16 base with fp32 adapters, full
fine-tuning with fp32 masters under bf16 autocast) and how liger-kernel is wired in. liger's own
Triton kernels do not run in the Triton interpreter (its RMSNorm kernel fails there), so
running them is a GPU check; here the call and its arguments are checked."""

from __future__ import annotations

import json

import pytest
import torch

from judgefree.train.config import TrainConfig
from judgefree.train.model import load_policy
from judgefree.train.trainer import train_dpo


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_bfloat16_training_keeps_fp32_trainable_weights_and_learns(train_llava_dir, llava_store, tmp_path, finetune):
    loaded = load_policy(train_llava_dir, TrainConfig(finetune=finetune, dtype="bfloat16"), torch.device("cpu"))
    trainable = {p.dtype for p in loaded.model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in loaded.model.parameters() if not p.requires_grad}
    assert loaded.compute_dtype == torch.bfloat16 and trainable == {torch.float32}
    assert frozen == ({torch.bfloat16} if finetune == "lora" else {torch.float32})  # vision tower (full)
    config = TrainConfig(finetune=finetune, dtype="bfloat16", learning_rate=1e-3 if finetune == "lora" else 3e-4,
                         epochs=5, batch_size=4, micro_batch_size=4, warmup_ratio=0.0, scheduler="constant")
    result = train_dpo(train_llava_dir, llava_store, tmp_path / "run", config, progress=False)
    losses = [m["loss"] for m in result.metrics]
    assert losses[0] == pytest.approx(0.6931, abs=2e-2)  # bf16 policy vs the engine's fp32 reference
    assert losses[-1] < losses[0] - 0.05, losses
    assert json.loads((result.model_dir / "export.json").read_text())["dtype"] == "bfloat16"


def test_liger_is_applied_to_the_language_model_without_its_fused_loss(train_llava_dir, monkeypatch):
    import liger_kernel.transformers as liger

    calls = []
    monkeypatch.setattr(liger, "apply_liger_kernel_to_llama", lambda **kwargs: calls.append(kwargs))
    loaded = load_policy(train_llava_dir, TrainConfig(liger=True), torch.device("cpu"))
    assert len(calls) == 1
    call = calls[0]
    assert call["model"] is loaded.model.get_base_model().model.language_model
    assert call["rope"] and call["rms_norm"] and call["swiglu"]
    assert not call["fused_linear_cross_entropy"] and not call["cross_entropy"]  # log-probs are ours

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="liger=True needs a CUDA device"):
        load_policy(train_llava_dir, TrainConfig(liger=True), torch.device("cpu"))
    calls.clear()
    load_policy(train_llava_dir, TrainConfig(), torch.device("cpu"))  # auto: only on CUDA
    assert calls == []


def test_gradient_checkpointing_trains_the_same(train_llava_dir, llava_store, tmp_path):
    """Checkpointing recomputes activations in the backward; the numbers must not change."""
    runs = []
    for checkpointing in (False, True):
        config = TrainConfig(finetune="lora", learning_rate=1e-2, max_steps=3, batch_size=2, micro_batch_size=1,
                             warmup_ratio=0.0, gradient_checkpointing=checkpointing)
        result = train_dpo(train_llava_dir, llava_store, tmp_path / str(checkpointing), config, progress=False)
        runs.append([m["loss"] for m in result.metrics])
    assert runs[0][-1] != runs[0][0]  # the steps changed the model
    assert runs[1] == pytest.approx(runs[0], abs=1e-6)

    # ...and it is really on: every decoder layer runs again during the backward.
    from judgefree.train.data import collate, load_examples
    from judgefree.train.policy import ResponseLogprobs, batch_logprobs

    examples, _ = load_examples(llava_store)
    for checkpointing, expected_calls in ((False, 1), (True, 2)):
        loaded = load_policy(train_llava_dir, TrainConfig(gradient_checkpointing=checkpointing), torch.device("cpu"))
        mlp = loaded.model.get_base_model().model.language_model.layers[0].mlp  # recomputed inside the layer
        calls = []
        mlp.register_forward_pre_hook(lambda *args: calls.append(1))  # (the recompute stops inside it)
        policy = ResponseLogprobs(loaded.model, loaded.architecture).train()
        chosen, rejected = batch_logprobs(policy, collate(examples[:1], loaded.pad_id, loaded.pixels))
        (chosen.sums - rejected.sums).sum().backward()
        assert len(calls) == expected_calls
