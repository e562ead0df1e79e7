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
from judgefree.world.metric import claims
from judgefree.world.scenes import CLASS_NAMES, COLOUR_NAMES, PARTNERS, Scene, WorldObject

CLIP_NAME = "WorldCLIP"
WEIGHTS_FILE = "world_clip.safetensors"


def clip_model_config(image_size: int) -> dict:
    return {"embed_dim": 64,
            "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "patch_size": 12,
                           "head_width": 32},
            "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@dataclass(frozen=True, slots=True)
class ClipTrainSettings:
    steps: int = 500
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup: int = 50
    seed: int = 0
    pretrain_steps: int = 0  # supervised recognition steps for the image tower first (world/pretrain.py)
    loss: str = "siglip"  # or "infonce" (one positive per image: its own sentence)


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


def holds(sentence_claims: tuple[tuple[str, str | None], ...], scene: Scene) -> bool:
    """Whether every claim is true of ``scene`` (a sentence with no claim is never true)."""
    colours = scene.colours()
    return bool(sentence_claims) and all(cls in colours and colour in (None, colours[cls])
                                         for cls, colour in sentence_claims)


class CachedTokens:
    """The tokenizer's rows, memoised per sentence: the grammar repeats a few thousand sentences,
    and BPE-tokenising each batch anew was a tenth of a training step."""

    def __init__(self, tokenizer):
        self.tokenizer, self.rows = tokenizer, {}

    def __call__(self, texts: list[str]):
        import torch

        new = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if new:
            self.rows.update(zip(new, self.tokenizer(new)))
        return torch.stack([self.rows[t] for t in texts])


def verification_accuracy(model, tokenizer, pixels, scenes: list[Scene], seed: int = 0) -> float:
    """How often the CLIP scores a true caption sentence of a scene above a false one (a hard
    negative: an absent class, its partner first, or a wrong colour): the verifier's own test."""
    import torch

    rng = np.random.default_rng([seed, 0xACC])
    pos = [positive_sentence(s, rng) for s in scenes]
    neg = [hard_negative(s, rng) for s in scenes]
    with torch.no_grad():
        images = model.encode_image(pixels, normalize=True)
        texts = model.encode_text(tokenizer(pos + neg), normalize=True)
    n = len(scenes)
    right = (images * texts[:n]).sum(-1) > (images * texts[n:]).sum(-1)
    return float(right.float().mean())


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

    if settings.loss not in ("siglip", "infonce"):
        raise ValueError(f"ClipTrainSettings.loss must be 'siglip' or 'infonce', got {settings.loss!r}")
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, image_size)
    open_clip.add_model_config(config)
    torch.manual_seed(settings.seed)
    model = open_clip.create_model(CLIP_NAME)
    tokens = CachedTokens(open_clip.get_tokenizer(CLIP_NAME))
    pretrain = None
    if settings.pretrain_steps:
        from judgefree.world.pretrain import pretrain_visual

        pretrain = pretrain_visual(model.visual, pixels, scenes, settings.pretrain_steps, seed=settings.seed, log=log)
    # SigLIP's pairwise sigmoid loss (Zhai et al., 2023) with labels from the exact truth: a text is
    # a positive of every image in the batch it is true of. InfoNCE's one-positive labels are wrong
    # here whenever another image holds the same object (most batches: 12 classes), and a CLIP
    # trained that way told classes apart poorly (docs/world.md).
    bias = torch.nn.Parameter(torch.tensor(-5.0))
    opt = torch.optim.AdamW([*model.parameters(), bias], lr=settings.learning_rate, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / settings.warmup)
                                              * 0.5 * (1 + np.cos(np.pi * min(s, settings.steps) / settings.steps)))
    rng = np.random.default_rng([settings.seed, 0xC11])
    start, losses = time.perf_counter(), []
    model.train()
    for step in range(settings.steps):
        idx = rng.choice(len(scenes), size=settings.batch_size, replace=False)
        texts_ = [positive_sentence(scenes[i], rng) for i in idx] + [hard_negative(scenes[i], rng) for i in idx]
        labels = torch.tensor([[holds(claims(t), scenes[i]) for t in texts_] for i in idx], dtype=torch.float32)
        images = model.encode_image(pixels[torch.as_tensor(idx)], normalize=True)
        texts = model.encode_text(tokens(texts_), normalize=True)
        logits = model.logit_scale.exp() * images @ texts.T  # [B, 2B]
        if settings.loss == "siglip":
            loss = F.binary_cross_entropy_with_logits(logits + bias, labels, reduction="sum") / len(idx)
        else:
            target = torch.arange(len(idx))
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
            "seconds": round(time.perf_counter() - start, 1), "tower_pretraining": pretrain}


def load_clip(folder: Path):
    """The trained CLIP in ``folder`` (eval mode) and its memoised tokenizer."""
    import open_clip
    from safetensors.torch import load_file

    open_clip.add_model_config(folder / f"{CLIP_NAME}.json")
    model = open_clip.create_model(CLIP_NAME)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval(), CachedTokens(open_clip.get_tokenizer(CLIP_NAME))


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
