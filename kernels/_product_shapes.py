"""The model shapes the product runs, for the kernels' build cases (``build_cases()`` in each
``*_triton.py``) and the roofline of ``bench/kernel_report.py``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelShape:
    name: str
    hidden: int
    vocab: int
    q_heads: int
    kv_heads: int
    head_dim: int


MODELS = (
    ModelShape("LLaVA-1.5-7B", 4096, 32000, 32, 32, 128),  # Vicuna's vocabulary
    ModelShape("LLaVA-1.5-7B-hf", 4096, 32064, 32, 32, 128),  # llava-hf pads it (image token)
    ModelShape("LLaVA-1.5-13B", 5120, 32000, 40, 40, 128),
    ModelShape("LLaVA-1.5-13B-hf", 5120, 32064, 40, 40, 128),
    ModelShape("Llama-3-8B (LLaVA-NeXT-8B)", 4096, 128256, 32, 8, 128),
    ModelShape("Qwen2-7B (Qwen2-VL-7B)", 3584, 152064, 28, 4, 128),
    ModelShape("Qwen2-1.5B", 1536, 151936, 12, 2, 128),
    ModelShape("SmolLM2-135M (demo)", 576, 49152, 9, 3, 64),
)
DTYPES = ("bfloat16", "float16")
DECODE_BATCHES = (1, 16, 64, 256)
SAMPLE_BATCHES = (1, 64, 256)
CONTEXT = 700  # LLaVA-1.5: 576 image tokens + prompt + response
KV_BLOCK_SIZE = 16  # EngineConfig.block_size
MAX_MODEL_LEN = 4096  # the decode graphs' block-table width is max_model_len / block_size
DPO_TOKENS = (8192, 6001)  # response tokens of a DPO micro-batch: a multiple of 16 and not


def vocabularies() -> tuple[int, ...]:
    return tuple(sorted({m.vocab for m in MODELS if m.vocab != 49152}))
