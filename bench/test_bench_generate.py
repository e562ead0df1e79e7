"""pytest-benchmark for pair generation: the engine vs the two transformers baselines
(testing/baseline.py) on a tiny random LLaVA, 4 images, 16 tokens per response, EOS ignored.
The full table (CPU and GPU shapes, tokens/s, roofline) is bench/generate.py.

    python -m pytest bench/test_bench_generate.py --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch
from generate import PROMPT, distinct_photos  # bench/generate.py
from judgefree.engine import Engine, SamplingParams
from judgefree.testing.baseline import TransformersBaseline
from judgefree.assets.checkpoints import build_tiny_llava

ON_GPU = torch.cuda.is_available()
DEVICE, DTYPE = ("cuda", torch.bfloat16) if ON_GPU else ("cpu", torch.float32)
KWARGS = dict(sampling=SamplingParams(temperature=1.0, ignore_eos=True), max_new_tokens=16, seed=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("bench") / "llava", hidden=128, layers=4, image_size=112)


@pytest.fixture(scope="module")
def images():
    return distinct_photos(4)


@pytest.mark.parametrize("impl", ["engine", "two-forward", "batched"])
def test_bench_generate_pairs(benchmark, impl, checkpoint, images):
    if impl == "engine":
        engine = Engine.from_pretrained(checkpoint, dtype=DTYPE, device=DEVICE, max_model_len=512, max_kv_blocks=512)
        fn = lambda: engine.generate_pairs(images, PROMPT, **KWARGS)  # noqa: E731
    else:
        baseline = TransformersBaseline(checkpoint, dtype=DTYPE, device=DEVICE)
        batched = impl == "batched"
        fn = lambda: baseline.generate_pairs(images, PROMPT, batched=batched, **KWARGS)  # noqa: E731
    pairs = benchmark.pedantic(fn, rounds=3, warmup_rounds=1)
    assert len(pairs) == len(images)
    assert all(len(p.chosen.token_ids) == len(p.rejected.token_ids) == 16 for p in pairs)
