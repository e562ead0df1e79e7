"""The identity of a model checkpoint folder: digests of its config and of its weight files.

A path says where a model was, not what it was: a round folder can be retrained in place, a
download can be replaced. Stores record this fingerprint beside the path, and a resumed store
refuses to continue with other weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

_BLOCK = 1 << 24


def model_fingerprint(folder: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "config_sha256", "weights_sha256", "digest"}`` of a Hugging Face checkpoint
    folder. ``weights_sha256`` covers the name, size and every byte of each ``*.safetensors``
    file (a prefix would not do: the first tensors of a file, embeddings and lm_head, are exactly
    the ones LoRA leaves unchanged). ``digest`` (32 hex digits) covers both."""
    folder = Path(folder)
    config = (folder / "config.json").read_bytes()
    weights = hashlib.sha256()
    both = hashlib.sha256(config)
    for file in sorted(folder.glob("*.safetensors")):
        header = f"{file.name}:{file.stat().st_size}:".encode()
        weights.update(header)
        both.update(header)
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                weights.update(block)
                both.update(block)
    return {"path": str(folder.resolve()), "config_sha256": hashlib.sha256(config).hexdigest(),
            "weights_sha256": weights.hexdigest(), "digest": both.hexdigest()[:32]}


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two fingerprints are of one model: the same config and weights (the path may differ)."""
    return (a.get("config_sha256"), a.get("weights_sha256")) == (b.get("config_sha256"), b.get("weights_sha256"))
