"""``judgefree curate``: CLIP-score both responses of every pair sentence by sentence, swap
chosen/rejected where chosen scores lower, sort by score difference into splits and keep some.

Writes the curated pair store, ``histogram.png`` and a summary (also in the manifest). A pair
with an empty response (nothing CLIP can score) is dropped: counted in the summary and listed.
Rerunning resumes the scoring; changing only --splits/--keep/--keep-diff re-selects without
re-scoring.
"""

from __future__ import annotations

import argparse
import sys


def split_indices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected split indices like 5 or 4,5; got {text!r}") from None


def diff_range(text: str) -> tuple[float, float]:
    parts = text.replace(":", ",").split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range LO:HI like 0.05:0.2; got {text!r}") from None
    return lo, hi


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("curate", help="CLIP-verify, swap, split and select generated pairs",
                              description=__doc__)
    p.add_argument("--pairs", required=True, help="generated pair store (output of `judgefree generate`)")
    p.add_argument("--out", required=True, help="curated pair store folder")
    p.add_argument("--clip", default="ViT-L-14-336",
                   help="open_clip model name, local-dir:PATH, or a model config .json (default ViT-L-14-336)")
    p.add_argument("--clip-weights", default="openai",
                   help="weights file, open_clip pretrained tag (default openai), or none (random init)")
    p.add_argument("--clip-quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                   help="QuickGELU activations (OpenAI weights need them; default: as the pretrained tag says)")
    p.add_argument("--score", choices=("clipscore", "cosine"), default="clipscore",
                   help="per-sentence score: clipscore = 2.5*max(cos,0) (default) or cosine")
    p.add_argument("--splits", type=int, default=10, help="number of splits by score difference (default 10)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep", type=split_indices, default=None,
                      help="split index(es) to keep, 0 = smallest differences (default: all)")
    keep.add_argument("--keep-diff", type=diff_range, default=None, help="keep differences in LO:HI (inclusive)")
    p.add_argument("--on-disagreement", default="swap", metavar="{swap,drop,ignore}",
                   help="a pair whose chosen scores below rejected: swap it (default, the paper), drop it, "
                   "or ignore CLIP (keep the generation's roles; an ablation)")
    p.add_argument("--chunk-size", type=int, default=256, help="pairs scored per step (and per resume point)")
    p.add_argument("--text-batch", type=int, default=256, help="texts per CLIP text-encoder batch")
    p.add_argument("--image-batch", type=int, default=32, help="images per CLIP image-encoder batch")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--precision", default="auto", help="open_clip precision: fp32, fp16, bf16 (auto: fp16 on cuda)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    export = p.add_argument_group("TRL / datasets export (docs/trl_export.md)")
    export.add_argument("--export-trl", default=None, metavar="FILE",
                        help="also write the kept pairs as a DPO Parquet file that TRL's DPOTrainer trains on unchanged")
    export.add_argument("--export-style", choices=("rendered", "messages"), default="rendered",
                        help="rendered (default): prompt with the model's template and <image>, responses that "
                        "tokenise back to exactly the generated ids; messages: conversational, not token-exact")
    images = export.add_mutually_exclusive_group()
    images.add_argument("--embed-images", action="store_const", const="embed", dest="export_images",
                        help="put the image bytes in the file (it then works anywhere)")
    images.add_argument("--absolute-image-paths", action="store_const", const="absolute", dest="export_images",
                        help="absolute image paths (default: relative to the export file's folder)")
    export.add_argument("--export-model", default=None, metavar="DIR",
                        help="model folder whose tokenizer generated the pairs (default: the one the store records)")
    export.add_argument("--export-inexact", choices=("drop", "keep", "error"), default="drop",
                        help="a pair whose response text tokenises to other ids than generated: leave it out "
                        "(default), keep it flagged exact=false, or stop")
    p.set_defaults(export_images="relative")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from judgefree.curate.clip_score import ClipConfig, ClipScorer
    from judgefree.curate.curation import curate_store, open_source
    from judgefree.curate.selection import Selection, format_summary

    source = open_source(args.pairs, args.out)  # a missing store or a wrong --out fails here, before CLIP loads
    if args.export_trl and args.export_style == "rendered":
        from judgefree.store.export import export_model_folder

        export_model_folder(source, args.export_model)  # and so does an export that could not run
    selection = Selection(splits=args.splits, keep_splits=args.keep, keep_diff=args.keep_diff,
                          on_disagreement=args.on_disagreement)
    weights = None if args.clip_weights.lower() in ("", "none") else args.clip_weights
    config = ClipConfig(model=args.clip, weights=weights, kind=args.score, device=args.device,
                        precision=args.precision, quick_gelu=args.clip_quick_gelu,
                        text_batch=args.text_batch, image_batch=args.image_batch)
    from judgefree.distributed import Ranks, rank_device

    with Ranks.start() as ranks:  # under torchrun: each rank scores its share on its own GPU
        if ranks.distributed and args.device in ("auto", "cuda"):
            config = replace(config, device=rank_device(None if args.device == "auto" else args.device, ranks))
        scorer = ClipScorer.load(config)
        report = curate_store(args.pairs, args.out, scorer, selection, clip_settings=config.to_manifest(),
                              chunk_size=args.chunk_size, progress=not args.no_progress, ranks=ranks)
    if not ranks.is_main:
        return 0  # rank 0 reports (and exports) for the job
    print(format_summary(report.summary))
    print(f"curated store: {report.store}  histogram: {report.histogram}  "
          f"({report.newly_scored} pairs scored now, {report.seconds:.1f} s)")
    if report.skipped:
        print(f"{len(report.skipped)} pairs skipped:", file=sys.stderr)
        for entry in report.skipped:
            print(f"  {entry['image']}: {entry['reason']}", file=sys.stderr)
    if args.export_trl:
        from judgefree.store.export import export_trl

        exported = export_trl(report.store, args.export_trl, style=args.export_style, images=args.export_images,
                              model=args.export_model, inexact=args.export_inexact)
        print(exported.describe())
    return 0
