"""pytest-benchmark for paged attention: decode and prefill, our kernels vs the PyTorch reference
and the gather + SDPA baseline. GPU: LLaVA-7B shapes (32 x 128 heads, bf16, context 700);
CPU: small shapes, reference and baseline only (interpreter timings are not performance).

    python -m pytest bench/test_bench_paged_attention.py --benchmark-enable
"""

from __future__ import annotations

import os

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from _timing import synced  # noqa: E402
from paged_attention import gather_sdpa_decode, make_inputs  # noqa: E402  (bench/paged_attention.py)

from judgefree.kernels.paged_attention import paged_decode_attention, paged_prefill_attention  # noqa: E402

DEVICE = torch.device("cuda" if ON_GPU else "cpu")
# (batch, context, q heads, kv heads, head_dim, dtype)
SHAPE = (16, 700, 32, 32, 128, torch.bfloat16) if ON_GPU else (4, 128, 4, 4, 64, torch.float32)




def _decode_inputs():
    batch, context, q_heads, kv_heads, head_dim, dtype = SHAPE
    return make_inputs(batch, context, q_heads, kv_heads, head_dim, 16, dtype, DEVICE, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("impl", ["triton", "torch", "gather_sdpa"])
def test_bench_paged_decode(benchmark, impl):
    if impl == "triton" and not ON_GPU:
        pytest.skip("the Triton kernel runs in the interpreter on the CPU: not a performance number")
    q, k_cache, v_cache, tables, lens = _decode_inputs()
    scale = q.shape[-1] ** -0.5
    if impl == "gather_sdpa":
        fn = lambda: gather_sdpa_decode(q, k_cache, v_cache, tables, lens, scale)  # noqa: E731
    else:
        fn = lambda: paged_decode_attention(q, k_cache, v_cache, tables, lens, scale=scale, backend=impl)  # noqa: E731
    out = benchmark(synced(fn))
    assert out.shape == q.shape and out.isfinite().all()


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_bench_paged_prefill(benchmark, impl):
    """Prefill of every sequence's whole context (image + prompt) in one packed call."""
    if impl == "triton" and not ON_GPU:
        pytest.skip("the Triton kernel runs in the interpreter on the CPU: not a performance number")
    q, k_cache, v_cache, tables, lens = _decode_inputs()
    batch, context = lens.shape[0], int(lens[0])
    packed = torch.randn(batch * context, q.shape[1], q.shape[2], generator=torch.Generator().manual_seed(1)).to(DEVICE, q.dtype)
    cu = torch.arange(batch + 1, dtype=torch.int32, device=DEVICE) * context
    fn = lambda: paged_prefill_attention(packed, k_cache, v_cache, tables, cu, lens, backend=impl)  # noqa: E731
    out = benchmark(synced(fn))
    assert out.shape == packed.shape and out.isfinite().all()
