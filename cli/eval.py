"""``judgefree eval``: hallucination evaluation (CHAIR on Object HalBench style answers).

``eval run`` answers a question file with the engine, ``eval chair`` scores the answers
against COCO annotations, ``eval compare`` prints two models' scores side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="hallucination evaluation: CHAIR / Object HalBench",
        description="Generate Object HalBench answers, score them with CHAIR, compare two models.")
    parser.set_defaults(func=lambda args: parser.print_help())
    actions = parser.add_subparsers(dest="eval_action", metavar="ACTION")

    chair = actions.add_parser(
        "chair", help="CHAIRs / CHAIRi / recall of a captions file",
        description="CHAIR (Rohrbach et al., 2018) of generated captions against COCO instance "
        "annotations and reference captions.")
    chair.add_argument("--captions", required=True, help="captions JSONL (image_id + caption)")
    chair.add_argument("--coco-annotations", required=True, metavar="DIR",
                       help="folder with COCO instances_*.json and captions_*.json")
    chair.add_argument("--out", help="result JSON with per-caption detail "
                       "(default: CAPTIONS with the suffix .chair.json)")
    chair.add_argument("--caption-key", help="field holding the text (default: caption, answer, text "
                       "or response, the first present)")
    chair.add_argument("--gt-cache", metavar="FILE",
                       help="JSON cache of ground-truth objects per image (speeds up reruns)")
    _add_protocol_options(chair)
    chair.set_defaults(func=_chair)

    run = actions.add_parser(
        "run", help="answer an Object HalBench question file with the engine",
        description="Generate answers (greedy by default); rerunning resumes where it stopped.")
    run.add_argument("--model", required=True, help="model folder (Hugging Face layout)")
    run.add_argument("--questions", required=True, help="question JSONL (image_id, question)")
    run.add_argument("--images", metavar="DIR", help="image folder (COCO file names); not needed "
                     "when the question file embeds its images")
    run.add_argument("--out", required=True, help="answers JSONL (written after every batch)")
    run.add_argument("--max-new-tokens", type=int, default=512)
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    run.add_argument("--device", default=None, help="cpu or cuda (default: the engine's choice)")
    run.set_defaults(func=_run)

    compare = actions.add_parser(
        "compare", help="two models' CHAIR side by side",
        description="Print two CHAIR results (or two captions files, scored on the spot) side by side.")
    compare.add_argument("first", help="CHAIR result JSON or captions JSONL (e.g. the seed model)")
    compare.add_argument("second", help="CHAIR result JSON or captions JSONL (e.g. the improved model)")
    compare.add_argument("--names", nargs=2, metavar=("FIRST", "SECOND"), help="column names")
    compare.add_argument("--coco-annotations", metavar="DIR", help="needed to score captions files")
    compare.add_argument("--gt-cache", metavar="FILE")
    _add_protocol_options(compare, "when scoring captions files")
    compare.set_defaults(func=_compare)


def _add_protocol_options(parser: argparse.ArgumentParser, when: str = "") -> None:
    parser.add_argument("--protocol", choices=("chair", "halbench"), default="chair",
                        help="chair (default): Rohrbach et al.'s denominators; halbench: Object HalBench's as "
                        "RLHF-V computes published tables (responses naming an object, each object once per "
                        f"response, its synonym table; docs/chair.md) {when}".rstrip())
    parser.add_argument("--drop-unfinished-sentence", action="store_true",
                        help="score a caption cut by the token limit without its unfinished last sentence "
                        "(off by default; both numbers are reported)")


def _metrics_line(m, label: str = "") -> str:
    denominator = (f"{m.captions_with_objects} of {m.captions} responses name an object"
                   if m.protocol == "halbench" else f"{m.captions} captions")
    return (f"{label}CHAIRs {100 * m.chair_s:.1f}%  CHAIRi {100 * m.chair_i:.1f}%  recall {100 * m.recall:.1f}%"
            f"  ({m.protocol}: {denominator}, {m.mentions} object mentions, "
            f"{m.hallucinated_mentions} hallucinated, {m.truncated_captions} truncated)")


def _chair(args: argparse.Namespace) -> int:
    from judgefree.evaluation.chair import evaluate_captions
    from judgefree.io import read_records, write_json_atomic

    report = evaluate_captions(read_records(args.captions, "caption"), args.coco_annotations,
                               caption_key=args.caption_key, cache_path=args.gt_cache, protocol=args.protocol,
                               drop_unfinished=args.drop_unfinished_sentence)
    out = Path(args.out) if args.out else Path(args.captions).with_suffix(".chair.json")
    write_json_atomic(out, report.to_json())
    m = report.metrics
    if report.whole_caption_metrics is None:
        print(_metrics_line(m))
    else:
        print(_metrics_line(m, "unfinished sentences dropped: "))
        print(_metrics_line(report.whole_caption_metrics, "whole captions:               "))
    for note in report.notes:
        print(f"note: {note}")
    if m.skipped_errors:
        print(f"skipped {m.skipped_errors} failed generation(s)", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def _one_writer(run):
    """Hold the answers file's lock while ``run`` appends to it: two runs on one --out would
    interleave their batches."""
    def locked(args: argparse.Namespace) -> int:
        from judgefree.distributed import Ranks, lock_folder

        out = Path(args.out)
        with Ranks.start() as ranks:  # under torchrun: rank 0 holds the lock for the job
            lock = lock_folder(out.parent, ranks, name=f".{out.name}.lock")
            try:
                args.ranks = ranks
                return run(args)
            finally:
                lock.release()

    return locked


@_one_writer
def _run(args: argparse.Namespace) -> int:
    from judgefree.evaluation import halbench

    settings = halbench.RunSettings(str(Path(args.model).resolve()), args.max_new_tokens,
                                    args.batch_size, args.temperature, args.seed)
    questions = halbench.load_questions(args.questions, args.images)
    ranks = args.ranks
    _, todo = halbench.pending_questions(questions, args.out, settings)
    if not todo:
        ranks.on_main(lambda: halbench.merge_parts(questions, args.out, settings))
        if ranks.is_main:
            print(f"all {len(questions)} questions already answered in {args.out}")
        return 0
    from judgefree.distributed import rank_device

    device = rank_device(args.device, ranks) if ranks.distributed else args.device
    engine = halbench.load_engine(args.model, dtype=args.dtype, device=device)
    summary = halbench.run_benchmark(engine, questions, args.out, settings,
                                     progress=sys.stderr.isatty(), ranks=ranks)
    if not ranks.is_main:
        return 1 if summary.failed else 0  # rank 0 reports for the job
    print(f"answered {summary.generated}, already there {summary.skipped}, failed "
          f"{len(summary.failed)}; wrote {args.out}")
    for question_id, error in summary.failed:
        print(f"question {question_id!r} failed: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def _compare(args: argparse.Namespace) -> int:
    from judgefree.evaluation.compare import format_comparison, load_metrics

    names = tuple(args.names) if args.names else (Path(args.first).stem, Path(args.second).stem)
    options = {"protocol": args.protocol, "drop_unfinished": args.drop_unfinished_sentence}
    first = load_metrics(args.first, args.coco_annotations, args.gt_cache, **options)
    second = load_metrics(args.second, args.coco_annotations, args.gt_cache, **options)
    print(format_comparison(names, first, second))
    return 0
