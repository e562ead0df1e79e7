"""The world's verifier: a small open_clip model trained contrastively on world scenes and
their sentences, saved as an open_clip model config JSON + safetensors weights (what
``judgefree curate --clip CONFIG.json --clip-weights WEIGHTS`` loads).

Texts are single caption sentences (the curate stage scores sentence by sentence); every image
also gets a hard negative sentence that names an object the scene lacks (its co-occurring
partner when absent) or a present object with a wrong colour.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from judgefree.world.grammar import _group_sentence, caption
from judgefree.world.scenes import CLASS_NAMES, COLOUR_NAMES, PARTNERS, Scene, WorldObject

CLIP_NAME = "WorldCLIP"
WEIGHTS_FILE = "world_clip.safetensors"


def clip_model_config(image_size: int) -> dict:
    return {"embed_dim": 64,
            "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "patch_size": 12, "head_width": 32},
            "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@dataclass(frozen=True, slots=True)
class ClipTrainSettings:
    steps: int = 500
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup: int = 50
    seed: int = 0


def split_sentences(text: str) -> list[str]:
    return [s.strip() + " ." for s in text.split(" .") if s.strip()]


def positive_sentence(scene: Scene, rng: np.random.Generator) -> str:
    sentences = split_sentences(caption(scene, int(rng.integers(1 << 30))))
    return sentences[int(rng.integers(len(sentences)))]


def hard_negative(scene: Scene, rng: np.random.Generator) -> str:
    """A sentence that is false of ``scene``: an absent class (the partner first) or a wrong colour."""
    present = scene.classes()
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    wrong_colour = rng.random() >= 0.6
    if not wrong_colour:
        partner = PARTNERS[obj.cls]
        absent = [c for c in CLASS_NAMES if c not in present]
        cls = partner if partner not in present and rng.random() < 0.7 else absent[int(rng.integers(len(absent)))]
        colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    else:
        cls = obj.cls
        colour = [c for c in COLOUR_NAMES if c != obj.colour][int(rng.integers(len(COLOUR_NAMES) - 1))]
    fake = WorldObject(cls, colour, obj.row, obj.col, obj.size, obj.dx, obj.dy)
    # a wrong colour must be said, or the sentence would be true
    return _group_sentence(rng, cls, colour, [fake], force_colour=wrong_colour)


def write_config(folder: Path, image_size: int) -> Path:
    path = folder / f"{CLIP_NAME}.json"
    path.write_text(json.dumps(clip_model_config(image_size), indent=1))
    return path


def train_clip(pixels, scenes: list[Scene], folder: Path, settings: ClipTrainSettings, image_size: int,
               log=print) -> dict:
    """Train on ``pixels`` ([N, 3, H, W], open_clip-normalised) of ``scenes``; writes the config
    and weights into ``folder``; returns a summary (loss, seconds)."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, image_size)
    open_clip.add_model_config(config)
    torch.manual_seed(settings.seed)
    model = open_clip.create_model(CLIP_NAME)
    tokenizer = open_clip.get_tokenizer(CLIP_NAME)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / settings.warmup)
                                              * 0.5 * (1 + np.cos(np.pi * min(s, settings.steps) / settings.steps)))
    rng = np.random.default_rng([settings.seed, 0xC11])
    start, losses = time.perf_counter(), []
    model.train()
    for step in range(settings.steps):
        idx = rng.choice(len(scenes), size=settings.batch_size, replace=False)
        pos = [positive_sentence(scenes[i], rng) for i in idx]
        neg = [hard_negative(scenes[i], rng) for i in idx]
        images = model.encode_image(pixels[torch.as_tensor(idx)], normalize=True)
        texts = model.encode_text(tokenizer(pos + neg), normalize=True)
        scale = model.logit_scale.exp()
        logits = scale * images @ texts.T  # [B, 2B]: in-batch and hard negatives
        target = torch.arange(len(idx))
        # same-text duplicates in a batch are rare (random sentences); left as negatives
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :len(idx)].T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            log(f"  clip step {step + 1}/{settings.steps}: loss {np.mean(losses[-100:]):.3f}")
    model.eval()
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    return {"steps": settings.steps, "final_loss": float(np.mean(losses[-50:])),
            "seconds": round(time.perf_counter() - start, 1)}


def clip_pixels(images, image_size: int):
    """open_clip's preprocessing for already-sized images: to tensor, OpenAI mean/std."""
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    arr = torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]))
    arr = arr.permute(0, 3, 1, 2)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    if arr.shape[-1] != image_size:
        raise ValueError(f"images are {arr.shape[-1]} px, the CLIP takes {image_size}")
    return (arr - mean) / std
