"""DPO training alone, from a curated pair store: the entry point for torchrun.

    python -m judgefree.train.launch --model M --pairs curated/ --out run/          # one process
    torchrun --nproc_per_node 8 -m judgefree.train.launch --model M --pairs P --out O  # FSDP2

Prints one JSON line with the result (rank 0). Rerunning resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    from judgefree.train.arguments import add_train_arguments

    p = argparse.ArgumentParser(prog="python -m judgefree.train.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder (Hugging Face layout)")
    p.add_argument("--pairs", required=True, help="curated pair store")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, model/")
    p.add_argument("--all-pairs", action="store_true", help="train on every pair the curation verified, whatever its split, not only the kept "
                   "ones; the pairs it dropped (an empty response, an unreadable image, CLIP's disagreement "
                   "under --on-disagreement drop) never")
    p.add_argument("--no-merge-lora", action="store_true", help="save a peft adapter instead of a merged model")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--device", default=None, help="cpu or cuda (default: this rank's GPU when there is one)")
    p.add_argument("--no-progress", action="store_true")
    add_train_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from judgefree.train.arguments import train_config
        from judgefree.train.trainer import train_dpo

        config = train_config(args, kept_only=not args.all_pairs, merge_lora=not args.no_merge_lora,
                              keep_checkpoints=args.keep_checkpoints)
        result = train_dpo(args.model, args.pairs, args.out, config, device=args.device,
                           progress=not args.no_progress)
    except Exception as err:
        from judgefree.errors import exit_code, one_line

        status = exit_code(err)  # what the user can act on: one line, no traceback
        if status is None:
            raise
        print(f"judgefree.train.launch: error: {one_line(err)}", file=sys.stderr)
        return status
    from judgefree.train.distributed import rank_info

    if rank_info().is_main:
        last = result.metrics[-1] if result.metrics else {}
        print(json.dumps({"model_dir": str(result.model_dir), "steps": result.steps,
                          "resumed_from": result.resumed_from, "already_done": result.already_done,
                          "losses": [m["loss"] for m in result.metrics], "last": last}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
