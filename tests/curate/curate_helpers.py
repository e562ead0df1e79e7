"""Shared test material for curation (also used by tests/cli): real photos from scikit-image
saved as files, a corrupt image, a tiny randomly initialised open_clip model registered from a
config file, fixed generation settings and a record factory."""

from __future__ import annotations

import json
from pathlib import Path

from judgefree.curate.generation import GenerationSettings
from judgefree.curate.records import PairRecord
from judgefree.engine.types import SamplingParams

# Generation settings shared by the driver tests (and the SIGKILLed child process).
SETTINGS = GenerationSettings(model="/models/fake", prompt="Describe this image in detail.",
                              h_rejected="uniform:0.3,0.9", sampling=SamplingParams(temperature=0.7), seed=5)

# Public-domain / CC0 photos bundled in scikit-image's wheel; camera is grey-scale on purpose.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry")

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


def write_photos(folder: Path, names: tuple[str, ...] = PHOTOS) -> list[Path]:
    """Save scikit-image photos as PNG/JPEG files in ``folder`` (sorted name order = list order)."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        suffix = ".jpg" if i % 2 else ".png"
        path = folder / f"{i:02d}_{name}{suffix}"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        paths.append(path)
    return paths


def write_corrupt_image(path: Path) -> Path:
    """A file with an image suffix whose content is a truncated PNG header plus noise."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return path


def write_tiny_clip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny open_clip model: its config JSON (registered by file, named by stem) and weights file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "TinyCLIP-judgefree-test.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(config.stem)
    weights = folder / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return config, weights


def make_record(i: int, chosen: float | None, rejected: float | None) -> PairRecord:
    """A record with fixed scores; log-probs exactly representable in float32 (the stored type)."""
    return PairRecord(
        pair_id=f"p{i}", image=f"/img/{i}.png", image_hash=f"h{i}", image_sha256=f"s{i}", prompt="Describe.",
        prompt_token_ids=[1, 2], chosen_text=f"chosen {i}", chosen_token_ids=[10 + i], chosen_h=0.0, chosen_seed=i,
        chosen_cond_logprobs=[-0.5], chosen_logprobs=[-0.25], chosen_finish_reason="stop",
        rejected_text=f"rejected {i}", rejected_token_ids=[20 + i, 21], rejected_h=0.5, rejected_seed=100 + i,
        rejected_cond_logprobs=[-1.5, -2.0], rejected_logprobs=[-1.0, -0.75], rejected_finish_reason="length",
        chosen_score=chosen, rejected_score=rejected, chosen_segments=1, rejected_segments=2,
    )
