"""Engine settings: KV cache geometry, batching limits, backends."""

from __future__ import annotations

from dataclasses import dataclass

ATTENTION_BACKENDS = ("auto", "triton", "torch")


@dataclass(slots=True)
class EngineConfig:
    """How the engine batches and caches.

    ``max_num_seqs`` counts responses (a response with h > 0 runs two rows: conditional and
    unconditional). ``max_num_batched_tokens`` is the per-step prefill token budget.
    The KV cache takes ``kv_cache_memory_fraction`` of the free device memory (of the
    available host memory on the CPU, where ``cpu_kv_cache_memory_fraction`` applies),
    capped by ``max_kv_blocks`` when set.
    """

    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    kv_cache_memory_fraction: float = 0.9
    cpu_kv_cache_memory_fraction: float = 0.1
    max_kv_blocks: int | None = None
    enforce_eager: bool = False  # True: no CUDA graphs for decode
    attention_backend: str = "auto"
    sampling_backend: str = "auto"
    prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 2:
            # A two-path response's last prompt tokens (one per path) are computed together.
            raise ValueError(f"max_num_batched_tokens must be >= 2, got {self.max_num_batched_tokens}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        for name in ("kv_cache_memory_fraction", "cpu_kv_cache_memory_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {value}")
        if self.max_kv_blocks is not None and self.max_kv_blocks < 1:
            raise ValueError(f"max_kv_blocks must be >= 1, got {self.max_kv_blocks}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        if self.sampling_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"sampling_backend must be one of {ATTENTION_BACKENDS}, got {self.sampling_backend!r}")
