"""pytest-benchmark: one DPO optimizer step (forward + backward + AdamW) on the real SmolLM2-135M
with LoRA, judgefree's step (linear_logprobs on response rows) against the same step with full
logits, float32 on the CPU. The full comparison with TRL's DPOTrainer is bench/dpo.py.

    .venv/bin/python -m pytest bench/test_bench_dpo.py --benchmark-enable
"""

from __future__ import annotations

import dpo_systems as bench  # bench/ is on sys.path under pytest (rootdir-relative test folder)
import pytest
import torch

PAIRS, PROMPT, RESPONSE = 2, 32, 128


@pytest.fixture(scope="module")
def setup():
    from judgefree.train.config import TrainConfig
    from judgefree.train.model import prepare_for_training

    device = torch.device("cpu")
    model, architecture, tokenizer, _ = bench.build_model("smollm2", device, torch.float32)
    config = TrainConfig(finetune="lora", learning_rate=1e-5, batch_size=PAIRS, micro_batch_size=PAIRS,
                         gradient_checkpointing=False, liger=False, dtype="float32")
    model = prepare_for_training(model, architecture, config, device, "lora")
    pairs = bench.make_pairs(tokenizer, PAIRS, PROMPT, RESPONSE, len(tokenizer))
    batch = bench.make_batches(pairs, PAIRS, device, architecture, None)[0]
    return model, architecture, config, batch


@pytest.mark.parametrize("system", ["ours", "eager"])
def test_dpo_step_cpu(benchmark, setup, system):
    from judgefree.train.policy import ResponseLogprobs
    from judgefree.train.trainer import dpo_step

    model, architecture, config, batch = setup
    policy = ResponseLogprobs(model, architecture) if system == "ours" else bench.EagerLogprobs(model, architecture)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    benchmark.group = f"DPO step SmolLM2-135M LoRA, {PAIRS} pairs, prompt {PROMPT}, responses {RESPONSE}, fp32"
    benchmark.extra_info["tokens"] = batch.num_tokens

    def step():
        return dpo_step(policy, optimizer, scheduler, [batch], 1, PAIRS, config, params)

    stats = benchmark.pedantic(step, rounds=3, warmup_rounds=1, iterations=1)
    assert torch.isfinite(stats.sums).all() and stats.sums[5] == PAIRS
