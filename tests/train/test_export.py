"""The trained model saved in Hugging Face layout: transformers and our Engine load the merged
folder and agree on its log-probs (per token, fp32, 1e-4 absolute), and the unmerged peft
adapter on top of the base model gives the same numbers as the merged weights."""

from __future__ import annotations

import json

import torch

from judgefree.train.config import TrainConfig
from judgefree.train.data import IGNORE_INDEX, collate, load_examples
from judgefree.train.model import load_policy
from judgefree.train.trainer import train_dpo


def _config(merge: bool) -> TrainConfig:
    return TrainConfig(finetune="lora", learning_rate=2e-2, epochs=2, batch_size=4, micro_batch_size=4,
                       warmup_ratio=0.0, scheduler="constant", merge_lora=merge, save_every=100)


def _hf_logprobs(model, input_ids, attention_mask, pixel_values, targets) -> list[torch.Tensor]:
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    rows = []
    for row in range(input_ids.shape[0]):
        mask = targets[row] != IGNORE_INDEX
        rows.append(logprobs[row][mask].gather(1, targets[row][mask][:, None])[:, 0])
    return rows


def test_saved_model_loads_in_transformers_and_engine_with_the_same_logprobs(train_llava_dir, llava_store,
                                                                             train_photos, tmp_path):
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    from judgefree.engine import Engine
    from judgefree.engine.types import Request, SamplingParams

    merged_dir = train_dpo(train_llava_dir, llava_store, tmp_path / "merged", _config(True), progress=False).model_dir
    adapter_dir = train_dpo(train_llava_dir, llava_store, tmp_path / "adapter", _config(False), progress=False).model_dir
    assert json.loads((merged_dir / "export.json").read_text())["format"] == "hf-checkpoint"
    assert json.loads((adapter_dir / "export.json").read_text())["format"] == "peft-adapter"
    assert (merged_dir / "tokenizer.json").is_file() and (merged_dir / "processor_config.json").is_file()

    merged = LlavaForConditionalGeneration.from_pretrained(merged_dir).eval()
    base = LlavaForConditionalGeneration.from_pretrained(train_llava_dir).eval()
    adapted = PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(train_llava_dir), adapter_dir)
    adapted.eval()

    examples, _ = load_examples(llava_store)
    loaded = load_policy(train_llava_dir, TrainConfig(), torch.device("cpu"))
    batch = collate(examples[:2], loaded.pad_id, loaded.pixels)
    pixel_rows = torch.cat([batch.pixel_values, batch.pixel_values])
    args = (batch.input_ids, batch.attention_mask, pixel_rows, batch.targets)
    merged_rows, adapted_rows, base_rows = (_hf_logprobs(m, *args) for m in (merged, adapted, base))
    for ours, theirs, before in zip(merged_rows, adapted_rows, base_rows):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
        assert (ours - before).abs().max() > 1e-2  # training moved the model

    engine = Engine.from_pretrained(merged_dir, max_model_len=256, max_kv_blocks=64,
                                    attention_backend="torch", sampling_backend="torch")
    greedy = SamplingParams(temperature=0.0)
    done = engine.generate([Request("Describe the image.", image=path, sampling=greedy, max_new_tokens=6)
                            for path in train_photos[:2]])
    for completion, path in zip(done, train_photos[:2]):
        assert completion.error is None
        ids = torch.tensor([completion.prompt_token_ids + completion.token_ids])
        pixels = loaded.pixels(path)[None]
        with torch.no_grad():
            logits = merged(input_ids=ids, pixel_values=pixels).logits[0].float()
        start = len(completion.prompt_token_ids) - 1
        steps = logits[start:start + len(completion.token_ids)]
        targets = torch.tensor(completion.token_ids)
        expected = torch.log_softmax(steps, -1).gather(1, targets[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(completion.cond_logprobs), expected, atol=1e-4, rtol=0)
        assert steps.argmax(-1).tolist() == completion.token_ids  # greedy agrees token for token
