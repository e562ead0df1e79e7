"""judgefree.kernels: Triton kernels, each beside its PyTorch reference (also the CPU path).

- ``mix_sample``: two-path mix + top-k/top-p + exact draw in one pass over the logits.
- ``linear_logprobs``: per-token log p(target) from hidden states and the lm_head without
  materialising the [tokens, vocab] logits (DPO).
- ``store_kv`` / ``paged_decode_attention`` / ``paged_prefill_attention``: attention over a
  paged, prefix-shared KV cache.
"""

from .linear_logprobs import linear_logprobs
from .mix_sample import MixSample, mix_sample
from .paged_attention import paged_decode_attention, paged_prefill_attention, store_kv

__all__ = [
    "MixSample",
    "linear_logprobs",
    "mix_sample",
    "paged_decode_attention",
    "paged_prefill_attention",
    "store_kv",
]
