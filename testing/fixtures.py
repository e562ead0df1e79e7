"""The pytest fixtures the whole suite shares (tests/conftest.py loads this module as a
plugin): checkpoints and engines built once per session, photos as arrays and as files, a
tiny CLIP scorer, and pair stores written from the real engine's output."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from judgefree.testing.material import (
    engine_records,
    varied_records,
    write_corrupt_image,
    write_photo_files,
    write_small_photos,
    write_store,
    write_test_clip,
)

# -- checkpoints and engines (the tokenizer comes from the SmolLM2 cache, converted on first use)


@pytest.fixture(scope="session")
def smollm2_dir():
    from judgefree.assets.smollm import smollm2_path

    return smollm2_path()


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory, smollm2_dir):
    from judgefree.assets.checkpoints import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("ckpt") / "llava-gqa", gqa=True, seed=1)


@pytest.fixture(scope="session")
def tiny_llava_mha_dir(tmp_path_factory, smollm2_dir):
    from judgefree.assets.checkpoints import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("ckpt") / "llava-mha", gqa=False, seed=2)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_dir):
    from judgefree.assets.checkpoints import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("ckpt") / "llama", gqa=True, seed=3)


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
def make_engine():
    """Build an extra engine with other options (small caches, small budgets)."""
    return _engine


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
    from judgefree.testing.baseline import TransformersBaseline

    return TransformersBaseline(tiny_llava_dir)


# -- photos -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def photos():
    """Real photos (scikit-image's public-domain set) as arrays, cropped small to keep hashing cheap."""
    from skimage import data

    gray = data.camera()[::4, ::4]
    return [data.astronaut()[::4, ::4].copy(), data.chelsea()[::3, ::3].copy(), data.coffee()[::3, ::3].copy(),
            np.ascontiguousarray(np.stack([gray] * 3, -1))]


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """Real photos as files, read-only by convention (tests copy before changing anything)."""
    folder = tmp_path_factory.mktemp("photos")
    write_photo_files(folder)
    return folder


@pytest.fixture
def fake_model_dir(tmp_path):
    """A model folder with only a config: all that commands check before the (fake) engine loads."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture
def photos_with_corrupt(tmp_path, photo_dir):
    """A folder with the photos plus one corrupt image file in the middle of the order."""
    folder = tmp_path / "images"
    shutil.copytree(photo_dir, folder)
    write_corrupt_image(folder / "03_broken.png")
    return folder


# -- CLIP -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory):
    return write_test_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def tiny_scorer(tiny_clip_files):
    from judgefree.curate.clip_score import ClipConfig, ClipScorer

    config, weights = tiny_clip_files
    return ClipScorer.load(ClipConfig(model=str(config), weights=str(weights), device="cpu", text_batch=7, image_batch=2))


# -- training material: a tiny random LLaVA (SmolLM2's real tokenizer) and pair stores from it


@pytest.fixture(scope="session")
def train_llava_dir(tmp_path_factory):
    from judgefree.assets.checkpoints import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("train-ckpt") / "llava", gqa=True, seed=11)


@pytest.fixture(scope="session")
def train_photos(tmp_path_factory) -> list[str]:
    return write_small_photos(tmp_path_factory.mktemp("train-photos"))


@pytest.fixture(scope="session")
def llava_records(train_llava_dir, train_photos):
    """Four pairs from the engine on the tiny LLaVA, with the engine's own reference log-probs."""
    from judgefree.engine import Engine

    engine = Engine.from_pretrained(train_llava_dir, max_model_len=256, max_kv_blocks=128,
                                    attention_backend="torch", sampling_backend="torch")
    return engine_records(engine, train_photos, max_new_tokens=10)


@pytest.fixture(scope="session")
def llava_store(tmp_path_factory, llava_records):
    return write_store(tmp_path_factory.mktemp("train-store") / "curated", llava_records)


@pytest.fixture(scope="session")
def varied_store(tmp_path_factory, llava_records):
    """The engine's pairs with responses of different lengths and every other pair swapped."""
    return write_store(tmp_path_factory.mktemp("train-varied") / "curated", varied_records(llava_records))
