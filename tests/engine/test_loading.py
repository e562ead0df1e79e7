"""Loading checkpoints: both LLaVA key layouts, clear errors for bad folders and options."""

import json
import shutil

import pytest
import torch
from judgefree.testing.material import GREEDY, PROMPT
from judgefree.engine import Engine, Request
from safetensors.torch import load_file, save_file


def _new_layout(name: str) -> str:
    """llava-hf's legacy names (what save_pretrained writes) -> transformers 5's module names."""
    if name.startswith("language_model.lm_head"):
        return name.replace("language_model.lm_head", "lm_head")
    if name.startswith("language_model.model."):
        return "model.language_model." + name.removeprefix("language_model.model.")
    return "model." + name


def test_both_llava_key_layouts_load_to_the_same_model(tiny_llava_dir, llava_engine, photos, tmp_path):
    copy = tmp_path / "new-layout"
    shutil.copytree(tiny_llava_dir, copy)
    tensors = load_file(copy / "model.safetensors")
    assert any(k.startswith("language_model.model.") for k in tensors)  # the legacy layout
    save_file({_new_layout(k): v for k, v in tensors.items()}, copy / "model.safetensors", metadata={"format": "pt"})
    engine = Engine.from_pretrained(copy, max_model_len=128, max_kv_blocks=64)
    request = Request(PROMPT, image=photos[0], h=0.5, sampling=GREEDY, max_new_tokens=6)
    assert engine.generate([request])[0].token_ids == llava_engine.generate([request])[0].token_ids
    for name, param in llava_engine.model.state_dict().items():
        torch.testing.assert_close(engine.model.state_dict()[name], param, rtol=0, atol=0)


def test_missing_and_invalid_folders_fail_clearly(tmp_path, tiny_llama_dir):
    with pytest.raises(FileNotFoundError, match="not found"):
        Engine.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        Engine.from_pretrained(tmp_path / "empty")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", no_weights)
    with pytest.raises(ValueError, match="safetensors"):
        Engine.from_pretrained(no_weights)
    with pytest.raises(ValueError, match="unknown engine option"):
        Engine.from_pretrained(tiny_llama_dir, block_sise=8)
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        Engine.from_pretrained(tiny_llama_dir, max_num_batched_tokens=1)
    with pytest.raises(ValueError, match="dtype"):
        Engine.from_pretrained(tiny_llama_dir, dtype="int8")


def test_unsupported_or_incomplete_checkpoints_fail_clearly(tmp_path, tiny_llama_dir):
    other = tmp_path / "gpt2"
    shutil.copytree(tiny_llama_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["model_type"] = "gpt2"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unsupported model_type"):
        Engine.from_pretrained(other)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_llama_dir, partial)
    tensors = load_file(partial / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing"):
        Engine.from_pretrained(partial)


def test_a_cache_too_small_for_one_response_is_refused(tiny_llama_dir):
    with pytest.raises(ValueError, match="KV cache holds 4 blocks"):
        Engine.from_pretrained(tiny_llama_dir, max_model_len=128, max_kv_blocks=4)


def test_kv_cache_is_sized_by_memory_and_capped_by_what_responses_can_use(tiny_llama_dir):
    engine = Engine.from_pretrained(tiny_llama_dir, max_model_len=64, max_num_seqs=2)
    per_seq = 64 // engine.config.block_size
    assert engine.runner.num_blocks == 2 * 2 * per_seq + per_seq  # every row at full length, + slack
    cache = engine.runner.kv_cache
    config = engine.model.config
    assert cache.shape == (2, config.num_hidden_layers, engine.runner.num_blocks, engine.config.block_size,
                           config.num_key_value_heads, config.head_dim)
    capped = Engine.from_pretrained(tiny_llama_dir, max_model_len=64, max_num_seqs=2, max_kv_blocks=9)
    assert capped.runner.num_blocks == 9
