"""Session-wide checkpoints and engines for the engine tests (built once: the tokenizer comes
from the SmolLM2 cache, converted on first use)."""

import numpy as np
import pytest
from judgefree.engine.smollm import smollm2_path
from judgefree.engine.tiny import build_tiny_llama, build_tiny_llava


@pytest.fixture(scope="session")
def smollm2_dir():
    return smollm2_path()


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory, smollm2_dir):
    return build_tiny_llava(tmp_path_factory.mktemp("ckpt") / "llava-gqa", gqa=True, seed=1)


@pytest.fixture(scope="session")
def tiny_llava_mha_dir(tmp_path_factory, smollm2_dir):
    return build_tiny_llava(tmp_path_factory.mktemp("ckpt") / "llava-mha", gqa=False, seed=2)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_dir):
    return build_tiny_llama(tmp_path_factory.mktemp("ckpt") / "llama", gqa=True, seed=3)


@pytest.fixture(scope="session")
def photos():
    """Real photos (scikit-image's public-domain set), cropped small to keep hashing cheap."""
    from skimage import data

    gray = data.camera()[::4, ::4]
    return [data.astronaut()[::4, ::4].copy(), data.chelsea()[::3, ::3].copy(), data.coffee()[::3, ::3].copy(),
            np.ascontiguousarray(np.stack([gray] * 3, -1))]


def _engine(folder, **options):
    from judgefree.engine import Engine

    options.setdefault("max_model_len", 256)
    options.setdefault("max_kv_blocks", 512)
    return Engine.from_pretrained(folder, **options)


@pytest.fixture(scope="session")
def llava_engine(tiny_llava_dir):
    return _engine(tiny_llava_dir)


@pytest.fixture(scope="session")
def llava_mha_engine(tiny_llava_mha_dir):
    return _engine(tiny_llava_mha_dir)


@pytest.fixture(scope="session")
def llava_hf(tiny_llava_dir):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir).eval()


@pytest.fixture(scope="session")
def llava_mha_hf(tiny_llava_mha_dir):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(tiny_llava_mha_dir).eval()


@pytest.fixture(scope="session")
def llava_baseline(tiny_llava_dir):
    from judgefree.engine.baseline import TransformersBaseline

    return TransformersBaseline(tiny_llava_dir)


@pytest.fixture(scope="session")
def make_engine():
    """Build an extra engine with other options (small caches, small budgets)."""
    return _engine
