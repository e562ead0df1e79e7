"""Sizing and allocating the paged KV cache.

One tensor [2, layers, blocks, block_size, kv_heads, head_dim]; each attention layer gets
views of its K and V planes. The block count comes from free device memory (GPU) or
available host memory (CPU) times the configured fraction, minus room for activations,
and is capped by ``max_kv_blocks`` and by what ``max_num_seqs`` two-path responses of
``max_model_len`` tokens could ever hold.
"""

from __future__ import annotations

import torch
from judgefree.engine.config import EngineConfig


def block_bytes(config, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of K and V of one block over all layers."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    elements = 2 * config.num_hidden_layers * block_size * config.num_key_value_heads * head_dim
    return elements * torch.empty((), dtype=dtype).element_size()


def _activation_reserve(config, engine: EngineConfig, dtype: torch.dtype) -> int:
    """Rough peak of a prefill step's activations (hidden, QKV, MLP, and the fp32 attention
    scratch of the widest step) and the sampler's scratch at a full batch, kept free besides
    the cache."""
    from judgefree.kernels.mix_sample_triton import scratch_bytes

    tokens = engine.max_num_batched_tokens
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_token = 6 * config.hidden_size + 3 * config.intermediate_size
    logits = 4 * engine.max_num_seqs * config.vocab_size * 4
    sampler = scratch_bytes(engine.max_num_seqs, config.vocab_size)
    return 2 * tokens * per_token * itemsize + logits + sampler


def _available_bytes(device: torch.device, engine: EngineConfig, config, dtype: torch.dtype) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * engine.kv_cache_memory_fraction) - _activation_reserve(config, engine, dtype)
    try:
        with open("/proc/meminfo") as handle:
            info = dict(line.split(":", 1) for line in handle)
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = 4 << 30
    return int(available * engine.cpu_kv_cache_memory_fraction)


def allocate_kv_cache(language_model, engine: EngineConfig, max_model_len: int,
                      device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """Allocate the cache, hand each attention layer its views; returns (cache, blocks)."""
    config = language_model.config
    per_block = block_bytes(config, engine.block_size, dtype)
    per_seq = -(-max_model_len // engine.block_size)
    useful = 2 * engine.max_num_seqs * per_seq + per_seq  # every row at full length, + slack
    num_blocks = min(max(_available_bytes(device, engine, config, dtype), 0) // per_block, useful)
    if engine.max_kv_blocks is not None:
        num_blocks = min(num_blocks, engine.max_kv_blocks)
    if num_blocks < 2 * per_seq:
        raise ValueError(
            f"the KV cache holds {num_blocks} blocks of {engine.block_size} tokens, fewer than one "
            f"two-path response of max_model_len={max_model_len} needs ({2 * per_seq}): "
            "free memory, raise max_kv_blocks, or lower max_model_len")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache = torch.empty(2, config.num_hidden_layers, num_blocks, engine.block_size,
                        config.num_key_value_heads, head_dim, dtype=dtype, device=device)
    for index, attn in enumerate(language_model.attention_layers()):
        attn.k_cache, attn.v_cache = cache[0, index], cache[1, index]
    return cache, num_blocks
