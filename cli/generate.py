"""``judgefree generate``: two responses per image (two-path decoding) into a pair store.

Rerunning the same command resumes: images already in the store are skipped, nothing is
generated twice. Missing or corrupt images are skipped, counted and listed at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate (chosen, rejected) response pairs per image",
                              description=__doc__)
    p.add_argument("--model", required=True, help="model folder (Hugging Face layout)")
    p.add_argument("--images", required=True, help="folder of images, or a text file with one path per line")
    p.add_argument("--out", required=True, help="pair store folder (created, or resumed when it exists)")
    add_generation_arguments(p, seed_help="base seed; each response's seed derives from it")
    p.add_argument("--dtype", default="auto", help="model dtype: auto, float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def add_generation_arguments(p, *, seed_help: str) -> None:
    """The generation options of ``generate`` and ``improve``: one definition, so their names
    and defaults cannot drift apart."""
    p.add_argument("--prompt", default="Describe this image in detail.", help="instruction given with every image")
    p.add_argument("--h-chosen", default="fixed:0", help="h distribution of the chosen response (default fixed:0)")
    p.add_argument("--h-rejected", default="gaussian:0.5,0.15",
                   help="h distribution of the rejected response: fixed:H, uniform:LO,HI, gaussian:MU,SIGMA")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--chunk-size", type=int, default=64, help="images per engine call and per store shard")


def generation_settings(args: argparse.Namespace, model: str):
    """GenerationSettings from the options ``add_generation_arguments`` defined; checks them
    (h distributions, sampling, --chunk-size) before anything loads."""
    from judgefree.generation.driver import GenerationSettings
    from judgefree.engine.types import SamplingParams

    sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    settings = GenerationSettings(model=model, prompt=args.prompt, h_chosen=args.h_chosen,
                                  h_rejected=args.h_rejected, sampling=sampling,
                                  max_new_tokens=args.max_new_tokens, seed=args.seed)
    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    return settings


def run(args: argparse.Namespace) -> int:
    from judgefree.generation.driver import generate_store, list_images

    model = Path(args.model)
    if not model.is_dir():
        raise FileNotFoundError(f"--model: model folder not found: {model}")
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"--model: {model} has no config.json (expected a Hugging Face model folder)")
    # All argument checks (h distributions, sampling, image list) run before the engine loads.
    settings = generation_settings(args, str(model.resolve()))
    images = list_images(args.images)

    from judgefree.distributed import Ranks, rank_device
    from judgefree.engine import Engine

    with Ranks.start() as ranks:  # under torchrun: each rank its own engine on its own GPU
        engine = Engine.from_pretrained(str(model), dtype=args.dtype, device=rank_device(args.device, ranks))
        report = generate_store(engine, images, args.out, settings, chunk_size=args.chunk_size,
                                progress=not args.no_progress, ranks=ranks)
        if not ranks.is_main:
            return 0  # rank 0 reports for the job
    print(f"{report.generated} pairs generated, {report.already_stored} already in {report.store}, "
          f"{len(report.skipped)} images skipped, {report.seconds:.1f} s")
    if report.skipped:
        print("skipped images:", file=sys.stderr)
        for entry in report.skipped:
            print(f"  {entry['image']}: {entry['reason']}", file=sys.stderr)
    return 0
