"""Session-wide material for the trainer tests: a tiny random LLaVA checkpoint (SmolLM2's real
tokenizer), photos, and a curated pair store generated from them by the real engine."""

from __future__ import annotations

import pytest
from train_helpers import engine_records, write_photos, write_store


@pytest.fixture(scope="session")
def train_llava_dir(tmp_path_factory):
    from judgefree.engine.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("train-ckpt") / "llava", gqa=True, seed=11)


@pytest.fixture(scope="session")
def train_photos(tmp_path_factory) -> list[str]:
    return write_photos(tmp_path_factory.mktemp("train-photos"))


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
    from train_helpers import varied_records

    return write_store(tmp_path_factory.mktemp("train-varied") / "curated", varied_records(llava_records))
