"""The ``judgefree`` console command: its parser and dispatcher.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
arguments; returns an exit code or None). Modules import heavy dependencies (torch, the
engine, open_clip) inside ``func``, so ``judgefree --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from judgefree import __version__
from judgefree.errors import exit_code, one_line

SUBCOMMANDS: tuple[str, ...] = ("demo", "eval", "generate", "curate", "improve", "store", "world", "cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="judgefree",
        description="Judge-free self-improvement of multimodal LLMs: two-path generation, "
        "CLIP verification, DPO.",
    )
    parser.add_argument("--version", action="version", version=f"judgefree {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"judgefree.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        code = args.func(args)
    except Exception as err:
        # What the user can act on (bad input, a busy folder, a full disk): one clear line and
        # its own exit code (judgefree.errors), no traceback. Anything else is a bug: raised.
        status = exit_code(err)
        if status is None:
            raise
        print(f"judgefree {args.command}: error: {one_line(err)}", file=sys.stderr)
        return status
    return int(code or 0)
