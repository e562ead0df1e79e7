"""``judgefree improve --demo``: one full round on material that ships with the installation.

Built once into ``OUT/assets`` (each piece written to a temporary name, then renamed):
photos from scikit-image (public domain / CC0), a LLaVA-architecture model whose language
model is the real SmolLM2-135M-Instruct with a small *random* vision tower and projector,
and a tiny *random* open_clip model for the verification step (no CLIP weights exist
offline). Everything else (engine, kernels, curation, DPO trainer) is the real pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from judgefree.curate.clip_score import ClipConfig
from judgefree.curate.generation import GenerationSettings
from judgefree.curate.selection import Selection
from judgefree.engine.types import SamplingParams
from judgefree.train.config import TrainConfig
from judgefree.train.loop import LoopSettings

DEFAULT_OUT = Path("runs") / "demo"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "horse", "camera")
PROMPT = "Describe this image."
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
RANDOM_PARTS = (
    "What is random in this demo (say it plainly): the LLaVA model's CLIP vision tower and "
    "projector are randomly initialised, so the model cannot really see the photos; the CLIP "
    "model that verifies the responses is randomly initialised too (no CLIP weights are "
    "available offline), so its chosen/rejected verdicts are noise. What is real: the "
    "language model (SmolLM2-135M-Instruct, Apache-2.0) and its tokenizer, the photos "
    "(scikit-image, public domain / CC0), and the whole pipeline: two-path generation, "
    "CLIP scoring and swapping, DPO with reference log-probs from generation, checkpoints."
)


def _publish(tmp: Path, final: Path) -> Path:
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def write_photos(folder: Path) -> Path:
    """The demo photos as PNG files (skipped when already there)."""
    if (folder / ".complete").is_file():
        return folder
    import skimage.data
    from PIL import Image

    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, name in enumerate(PHOTOS):
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(tmp / f"{i:02d}_{name}.png")
    (tmp / ".complete").write_text("scikit-image photos: " + ", ".join(PHOTOS) + "\n")
    return _publish(tmp, folder)


def write_tiny_clip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A randomly initialised open_clip model: its config JSON and safetensors weights."""
    config, weights = folder / "TinyCLIP-judgefree-demo.json", folder / "tiny_clip.safetensors"
    if (folder / ".complete").is_file():
        return config, weights
    import open_clip
    import torch
    from safetensors.torch import save_file

    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / config.name).write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp / config.name)
    torch.manual_seed(seed)
    model = open_clip.create_model(config.stem)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / weights.name))
    (tmp / ".complete").write_text("random open_clip model\n")
    _publish(tmp, folder)
    return config, weights


def demo_settings(out: str | Path = DEFAULT_OUT, progress: bool = True) -> LoopSettings:
    """Build the assets (once) and the one-round settings: short responses, six photos, LoRA."""
    from judgefree.curate.generation import list_images
    from judgefree.engine.tiny import demo_llava_path

    out = Path(out)
    assets = out / "assets"
    images = write_photos(assets / "images")
    # LLaVA layout: the real SmolLM2-135M language model, a random vision tower + projector
    # (56 px: 16 image tokens, so that a round fits in minutes on a CPU); cached per machine.
    model = demo_llava_path(image_size=56)
    clip_config, clip_weights = write_tiny_clip(assets / "clip")
    generation = GenerationSettings(model="", prompt=PROMPT, h_chosen="fixed:0", h_rejected="gaussian:0.5,0.15",
                                    sampling=SamplingParams(temperature=0.7, top_p=0.95), max_new_tokens=24,
                                    seed=0)
    train = TrainConfig(finetune="lora", lora_r=8, lora_alpha=16, learning_rate=2e-4, epochs=3,
                        batch_size=2, micro_batch_size=2, save_every=3, warmup_ratio=0.0, dtype="auto")
    return LoopSettings(
        model=str(model), images=list_images(images), out=str(out), rounds=1, generation=generation,
        chunk_size=len(PHOTOS), clip=ClipConfig(model=str(clip_config), weights=str(clip_weights), device="auto"),
        selection=Selection(splits=2), train=train, progress=progress)


def run_demo(out: str | Path | None = None, progress: bool = True) -> int:
    """Run (or resume) the demo round and print what happened; returns an exit code."""
    import textwrap
    import time

    from judgefree.curate.store import PairStore
    from judgefree.train.loop import Loop

    start = time.perf_counter()
    out = Path(out) if out else DEFAULT_OUT
    print(textwrap.fill(RANDOM_PARTS, width=100), end="\n\n")
    print(f"building the demo assets in {out / 'assets'} (once) ...", flush=True)
    settings = demo_settings(out, progress=progress)
    report = Loop(settings, log=lambda line: print(line, flush=True)).run()[0]
    generate, curate, train = report.stages["generate"], report.stages["curate"], report.stages["train"]
    first, last = train["first"], train["last"]
    print(f"\nround 1 of the demo, in {out}:")
    print(f"  generate: {generate['pairs']} pairs from {len(settings.images)} photos "
          f"(chosen h = 0, rejected h ~ {settings.generation.h_rejected})")
    print(f"  curate:   random tiny CLIP swapped {curate['swapped']} of {curate['scored']} pairs, kept {curate['kept']}")
    print(f"  train:    {train['steps']} LoRA DPO steps; loss {first['loss']:.4f} -> {last['loss']:.4f}, "
          f"reward margin {first['rewards/margins']:.3f} -> {last['rewards/margins']:.3f}, "
          f"accuracy {first['rewards/accuracies']:.2f} -> {last['rewards/accuracies']:.2f}, "
          f"{last['tokens_per_s']:.0f} tokens/s")
    print(f"  model m1: {report.model_out} (merged LoRA, Hugging Face layout; `judgefree generate --model` takes it)")
    pair = next(PairStore(Path(out) / "round-1" / "curated").records(kept_only=True), None)
    if pair is not None:
        print(f"\nexample pair ({Path(pair.image).name}):")
        print(f"  chosen   (h={pair.chosen_h:.2f}, score {pair.chosen_score:.3f}): {pair.chosen_text.strip()!r}")
        print(f"  rejected (h={pair.rejected_h:.2f}, score {pair.rejected_score:.3f}): {pair.rejected_text.strip()!r}")
    photo = settings.images[1]
    print(f"\nboth models in the engine, greedy answer for {Path(photo).name} (the photo is seen through the random tower):")
    for name, folder in (("m0", settings.model), ("m1", report.model_out)):
        print(f"  {name}: {_greedy_answer(folder, photo, settings.generation.max_new_tokens)!r}")
    print(f"  ({train['steps']} small LoRA steps seldom change a greedy answer; the reward margin above shows the change)")
    print(f"\ndone in {time.perf_counter() - start:.0f} s; rerunning resumes or skips finished stages.")
    return 0


def _greedy_answer(model: str, image: str, max_new_tokens: int) -> str:
    from judgefree.engine import Engine
    from judgefree.engine.types import Request, SamplingParams

    engine = Engine.from_pretrained(model, max_model_len=512)
    done = engine.generate([Request(PROMPT, image=image, sampling=SamplingParams(temperature=0.0),
                                    max_new_tokens=max_new_tokens)])[0]
    if done.error:
        raise RuntimeError(f"the engine could not answer with {model}: {done.error}")
    return done.text.strip()
