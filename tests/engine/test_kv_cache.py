"""KV cache sizing keeps room for what a decoding step allocates besides the cache."""

from types import SimpleNamespace

import torch

from judgefree.engine.config import EngineConfig
from judgefree.engine.kv_cache import _activation_reserve
from judgefree.kernels.mix_sample_triton import scratch_bytes


def test_the_reserve_keeps_the_samplers_scratch_at_a_full_batch():
    # LLaVA-1.5-7B's language model with a Qwen-sized vocabulary: the sampler's candidate
    # buffers at 256 responses are ~317 MB, more than the rest of the decode reserve.
    config = SimpleNamespace(hidden_size=4096, intermediate_size=11008, vocab_size=152064)
    engine = EngineConfig(max_num_seqs=256, max_num_batched_tokens=256)
    without_sampler = 2 * 256 * (6 * 4096 + 3 * 11008) * 2 + 4 * 256 * 152064 * 4
    sampler = scratch_bytes(256, 152064)
    assert sampler > 300e6
    assert _activation_reserve(config, engine, torch.bfloat16) == without_sampler + sampler
