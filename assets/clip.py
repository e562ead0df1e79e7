"""Small randomly initialised open_clip models saved as files (a config JSON that open_clip
registers by file name, and safetensors weights), for tests and demos without CLIP weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_tiny_clip(folder: str | Path, *, config: dict[str, Any] = TINY_CLIP, name: str = "TinyCLIP-judgefree",
                    seed: int = 0) -> tuple[Path, Path]:
    """A random open_clip model of ``config`` in ``folder``: returns (config JSON, weights)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_path, weights = folder / f"{name}.json", folder / "tiny_clip.safetensors"
    config_path.write_text(json.dumps(config))
    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(config_path.stem)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return config_path, weights
