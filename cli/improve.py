"""``judgefree improve``: the self-improvement loop, generate -> curate -> train (-> evaluate)
per round, each round starting from the previous round's model.

Every stage resumes its partial output and is skipped once complete, so rerunning the same
command continues where it stopped (a larger --rounds adds rounds). ``judgefree improve
--demo`` runs one round on the world (procedural scenes with exact truth, a seed LLaVA and its
CLIP trained here, docs/world.md) and reports hallucination before and after;
``--demo-smollm2`` is the earlier demo on bundled photos and a SmolLM2-based LLaVA. Under torchrun, training runs on every rank with FSDP2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from judgefree.cli.curate import diff_range, split_indices
from judgefree.cli.generate import add_generation_arguments, generation_settings
from judgefree.train.arguments import add_train_arguments, train_config

DEMO_ALLOWED = {"demo", "demo_smollm2", "out", "no_progress", "command", "func"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("improve", help="self-improvement rounds: generate, curate, train (, evaluate)",
                              description=__doc__)
    p.add_argument("--demo", action="store_true",
                   help="one round on the world: m0 -> pairs -> CLIP curation -> DPO -> m1, hallucination "
                        "measured against exact truth (builds the world once, cached; no other arguments)")
    p.add_argument("--demo-smollm2", action="store_true",
                   help="the earlier demo: one round on bundled photos and the SmolLM2-based LLaVA "
                        "(random tower and CLIP)")
    p.add_argument("--model", help="seed model folder (Hugging Face layout)")
    p.add_argument("--images", help="folder of images, or a text file with one path per line")
    p.add_argument("--rounds", type=int, default=1, help="rounds to run (default 1); a rerun may raise it")
    p.add_argument("--out", default=None, help="run folder (default runs/, with --demo runs/demo)")
    g = p.add_argument_group("generation")
    add_generation_arguments(g, seed_help="generation seed of round 1 (round k uses seed + k - 1)")
    g = p.add_argument_group("curation")
    g.add_argument("--clip", default="ViT-L-14-336")
    g.add_argument("--clip-weights", default="openai")
    g.add_argument("--clip-quick-gelu", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--score", choices=("clipscore", "cosine"), default="clipscore")
    g.add_argument("--splits", type=int, default=10)
    keep = g.add_mutually_exclusive_group()
    keep.add_argument("--keep", type=split_indices, default=None, help="split index(es) to keep (default: all)")
    keep.add_argument("--keep-diff", type=diff_range, default=None, help="keep score differences in LO:HI")
    g.add_argument("--on-disagreement", default="swap", metavar="{swap,drop,ignore}",
                   help="chosen scores below rejected: swap (default), drop, or ignore CLIP")
    add_train_arguments(p)
    g = p.add_argument_group("evaluation (optional: CHAIR after every round, and of the seed model)")
    g.add_argument("--eval-questions", help="Object HalBench question JSONL")
    g.add_argument("--eval-images", help="image folder for the questions (COCO file names)")
    g.add_argument("--coco-annotations", help="folder with COCO instances_*.json and captions_*.json")
    g.add_argument("--eval-max-new-tokens", type=int, default=512)
    p.add_argument("--dtype", default="auto", help="engine dtype: auto, float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _check_demo_alone(args: argparse.Namespace) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    defaults = vars(parser.parse_args(["improve"]))
    changed = sorted(k for k, v in vars(args).items() if k not in DEMO_ALLOWED and v != defaults.get(k))
    if changed:
        raise ValueError(f"--demo takes no other arguments than --out and --no-progress "
                         f"(got --{changed[0].replace('_', '-')})")


def _settings(args: argparse.Namespace):
    from judgefree.curate.clip_score import ClipConfig
    from judgefree.generation.driver import list_images
    from judgefree.curate.selection import Selection
    from judgefree.pipeline.loop import EvalSettings, LoopSettings

    if not args.model or not args.images:
        raise ValueError("--model and --images are required (or run `judgefree improve --demo`)")
    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"--model: no Hugging Face model folder at {model} (config.json missing)")
    evaluation = None
    eval_inputs = (args.eval_questions, args.coco_annotations)
    if any(eval_inputs):
        if not all(eval_inputs):
            raise ValueError("evaluation needs both --eval-questions and --coco-annotations")
        evaluation = EvalSettings(args.eval_questions, args.coco_annotations, args.eval_images,
                                  args.eval_max_new_tokens)
    generation = generation_settings(args, model="")
    weights = None if args.clip_weights.lower() in ("", "none") else args.clip_weights
    return LoopSettings(
        model=str(model.resolve()), images=list_images(args.images), out=args.out or "runs", rounds=args.rounds,
        generation=generation, chunk_size=args.chunk_size,
        clip=ClipConfig(model=args.clip, weights=weights, kind=args.score, quick_gelu=args.clip_quick_gelu),
        selection=Selection(splits=args.splits, keep_splits=args.keep, keep_diff=args.keep_diff,
                            on_disagreement=args.on_disagreement),
        train=train_config(args), evaluation=evaluation, dtype=args.dtype, device=args.device,
        progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    from judgefree.pipeline.loop import Loop

    if args.demo or args.demo_smollm2:
        _check_demo_alone(args)
        if args.demo and args.demo_smollm2:
            raise ValueError("--demo and --demo-smollm2 are two demos: choose one")
        if args.demo_smollm2:
            from judgefree.pipeline.demo_smollm2 import run_demo as run_smollm2

            return run_smollm2(args.out, progress=not args.no_progress)
        from judgefree.pipeline.demo import run_demo

        return run_demo(args.out, progress=not args.no_progress)
    reports = Loop(_settings(args), log=lambda line: print(line, file=sys.stderr)).run()
    for report in reports:
        train = report.stages["train"]
        last = train.get("last", {})
        print(f"round {report.round}: {report.stages['generate'].get('pairs')} pairs, "
              f"kept {report.stages['curate'].get('kept')}, {train.get('steps')} DPO steps, "
              f"final loss {last.get('loss', float('nan')):.4f}, margin {last.get('rewards/margins', float('nan')):.3f}"
              f" -> {report.model_out}")
        if "evaluate" in report.stages:
            m = report.stages["evaluate"]["metrics"]
            print(f"  CHAIRs {100 * m['chair_s']:.1f}%  CHAIRi {100 * m['chair_i']:.1f}%  recall {100 * m['recall']:.1f}%")
    return 0
