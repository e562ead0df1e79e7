"""``judgefree world build``: render the scenes, train the CLIP, train the seed m0 on its
tower, evaluate m0 on the held-out scenes; all into one cached folder:

    world-<key>/clip/WorldCLIP.json + world_clip.safetensors   (open_clip; judgefree curate --clip)
    world-<key>/m0/                                            (HF LlavaForConditionalGeneration)
    world-<key>/eval_images/*.png, m0_eval.jsonl, build.json   (timings, losses, m0's metrics)
Deterministic from the config (torch seeded, fixed thread count per run recorded).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

from judgefree.threads import torch_threads
from judgefree.world.config import WorldConfig

# One torch thread while the world builds and the demo runs: these models are tiny, and on a
# shared 2-core machine two threads wait on each other (measured: pair generation 4.4x faster
# with one thread under load). Restored after the call.
WORLD_THREADS = 1


CACHE_PREFIX = "world-"
_CACHE_NAME = re.compile(r"world-[0-9a-f]{10}")


def cache_name(config: WorldConfig) -> str:
    """The world's folder in the assets cache: ``world-<config.key()>``."""
    return f"{CACHE_PREFIX}{config.key()}"


def is_world_cache(name: str) -> bool:
    return _CACHE_NAME.fullmatch(name) is not None


def current_cache_names() -> set[str]:
    """The world folders this version builds (the demo's and the CI test's); any other
    ``world-<key>`` in the cache is an older version's (``judgefree cache prune`` removes it)."""
    from judgefree.world.config import SMALL

    return {cache_name(WorldConfig()), cache_name(SMALL)}


def world_folder(config: WorldConfig = WorldConfig(), cache_dir=None, log=print) -> Path:
    """The built world of ``config`` (built on first use, then read from the cache)."""
    from judgefree.assets.cache import cached_folder

    return cached_folder(cache_name(config), lambda tmp: build(tmp, config, log), cache_dir)


@torch_threads(WORLD_THREADS)
def build(folder: Path, config: WorldConfig, log=print) -> dict:
    import torch
    from safetensors.torch import load_file

    from judgefree.world.clip import (CLIP_NAME, WEIGHTS_FILE, clip_model_config, clip_pixels, load_clip, train_clip,
                                      verification_accuracy)
    from judgefree.world.evaluate import evaluate_model, write_images
    from judgefree.world.render import render
    from judgefree.world.scenes import TRAIN, EVAL, scenes, web_scenes
    from judgefree.world.seed import train_seed, write_untrained
    from judgefree.world.version import generator_fingerprint

    start = time.perf_counter()
    torch.manual_seed(0)
    dist = replace(TRAIN, cooccurrence=config.cooccurrence, colour_prior=config.colour_prior)
    train = scenes("train", config.train_scenes, dist=dist)
    log(f"world: rendering {len(train)} training scenes at {config.image_size} px ...")
    pixels = clip_pixels([render(s, config.image_size) for s in train], config.image_size)
    web = web_scenes(config.clip_scenes)
    log(f"world: rendering {len(web)} unbiased scenes for the CLIP's pretraining ...")
    web_pixels = clip_pixels([render(s, config.image_size) for s in web], config.image_size)
    held_out = scenes("eval", config.eval_scenes, dist=EVAL)
    eval_pixels = clip_pixels([render(s, config.image_size) for s in held_out], config.image_size)
    t_render = time.perf_counter() - start
    log("world: training the CLIP ...")
    clip = train_clip(web_pixels, web, folder / "clip", config.clip, config.image_size, log=log)
    del web_pixels
    clip_state = load_file(str(folder / "clip" / WEIGHTS_FILE))
    model, tokens = load_clip(folder / "clip")
    clip["verification_accuracy"] = verification_accuracy(model, tokens, eval_pixels, held_out)
    clip["verification_accuracy_training_scenes"] = verification_accuracy(model, tokens, pixels[:len(held_out)],
                                                                          train[:len(held_out)])
    log(f"world: CLIP prefers a true sentence to a false one on {clip['verification_accuracy']:.1%} of the "
        f"evaluation scenes ({clip['verification_accuracy_training_scenes']:.1%} of biased training scenes)")
    log("world: training the seed m0 on the CLIP's image tower ...")
    m0 = folder / "m0"
    write_untrained(m0, clip_model_config(config.image_size), clip_state, config.seed_model)
    seed = train_seed(m0, pixels, train, config.seed_model, log=log)
    images = write_images(held_out, folder / "eval_images", config.image_size)
    log(f"world: m0 captions {len(held_out)} evaluation scenes ...")
    metrics, _ = evaluate_model(m0, held_out, images, folder / "m0_eval.jsonl", device="cpu")
    summary = {"config": asdict(config), "clip": clip, "seed": seed, "render_seconds": round(t_render, 1),
               "m0_eval": metrics.to_json(), "threads": torch.get_num_threads(),
               "seconds": round(time.perf_counter() - start, 1), "clip_name": CLIP_NAME,
               "generator": generator_fingerprint()}
    from judgefree.io import write_json_atomic

    write_json_atomic(folder / "build.json", summary)
    log(f"world: built in {summary['seconds']:.0f} s; m0 on evaluation scenes: CHAIRs {metrics.chair_s:.1%} "
        f"CHAIRi {metrics.chair_i:.1%} recall {metrics.recall:.1%} attribute errors {metrics.attribute_error:.1%}")
    return summary


def built_summary(folder: Path) -> dict:
    return json.loads((folder / "build.json").read_text())


def clip_paths(folder: Path) -> tuple[Path, Path]:
    from judgefree.world.clip import CLIP_NAME, WEIGHTS_FILE

    return folder / "clip" / f"{CLIP_NAME}.json", folder / "clip" / WEIGHTS_FILE
