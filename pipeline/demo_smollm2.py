"""``judgefree improve --demo``: one full round on material that ships with the installation.

Built once into ``OUT/assets`` (each piece written to a temporary name, then renamed):
photos from scikit-image (public domain / CC0), a LLaVA-architecture model whose language
model is the real SmolLM2-135M-Instruct with a small *random* vision tower and projector,
and a tiny *random* open_clip model for the verification step (no CLIP weights exist
offline). Everything else (engine, kernels, curation, DPO trainer) is the real pipeline.
"""

from __future__ import annotations

from pathlib import Path

from judgefree.curate.clip_score import ClipConfig
from judgefree.generation.driver import GenerationSettings
from judgefree.curate.selection import Selection
from judgefree.engine.types import SamplingParams
from judgefree.train.config import TrainConfig
from judgefree.pipeline.loop import LoopSettings

DEFAULT_OUT = Path("runs") / "demo"
PROMPT = "Describe this image."
CLIP_NAME = "TinyCLIP-judgefree-demo"
RANDOM_PARTS = (
    "What is random in this demo (say it plainly): the LLaVA model's CLIP vision tower and "
    "projector are randomly initialised, so the model cannot really see the photos; the CLIP "
    "model that verifies the responses is randomly initialised too (no CLIP weights are "
    "available offline), so its chosen/rejected verdicts are noise. What is real: the "
    "language model (SmolLM2-135M-Instruct, Apache-2.0) and its tokenizer, the photos "
    "(scikit-image, public domain / CC0), and the whole pipeline: two-path generation, "
    "CLIP scoring and swapping, DPO with reference log-probs from generation, checkpoints."
)


def demo_assets(assets: Path) -> tuple[list[Path], tuple[Path, Path]]:
    """The photos and the random CLIP of the demo, built once into ``assets``."""
    from judgefree.assets.cache import build_once
    from judgefree.assets.clip import write_tiny_clip
    from judgefree.assets.photos import DEMO_PHOTOS, write_photos

    photos = build_once(assets / "images", lambda tmp: write_photos(tmp, DEMO_PHOTOS),
                        "scikit-image photos: " + ", ".join(DEMO_PHOTOS))
    clip = build_once(assets / "clip", lambda tmp: write_tiny_clip(tmp, name=CLIP_NAME), "random open_clip model")
    return sorted(photos.glob("*.png")), (clip / f"{CLIP_NAME}.json", clip / "tiny_clip.safetensors")


def demo_settings(out: str | Path = DEFAULT_OUT, progress: bool = True) -> LoopSettings:
    """Build the assets (once) and the one-round settings: short responses, six photos, LoRA."""
    from judgefree.assets.checkpoints import demo_llava_path

    out = Path(out)
    images, (clip_config, clip_weights) = demo_assets(out / "assets")
    # LLaVA layout: the real SmolLM2-135M language model, a random vision tower + projector
    # (56 px: 16 image tokens, so that a round fits in minutes on a CPU); cached per machine.
    model = demo_llava_path(image_size=56)
    generation = GenerationSettings(model="", prompt=PROMPT, h_chosen="fixed:0", h_rejected="gaussian:0.5,0.15",
                                    sampling=SamplingParams(temperature=0.7, top_p=0.95), max_new_tokens=24,
                                    seed=0)
    train = TrainConfig(finetune="lora", lora_r=8, lora_alpha=16, learning_rate=2e-4, epochs=3,
                        batch_size=2, micro_batch_size=2, save_every=3, warmup_ratio=0.0, dtype="auto")
    return LoopSettings(
        model=str(model), images=[str(p.resolve()) for p in images], out=str(out), rounds=1,
        generation=generation, chunk_size=len(images),
        clip=ClipConfig(model=str(clip_config), weights=str(clip_weights), device="auto"),
        selection=Selection(splits=2), train=train, progress=progress)


def run_demo(out: str | Path | None = None, progress: bool = True) -> int:
    """Run (or resume) the demo round and print what happened; returns an exit code."""
    import textwrap
    import time

    from judgefree.store.pair_store import PairStore
    from judgefree.pipeline.loop import Loop

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
