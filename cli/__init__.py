"""judgefree.cli: the ``judgefree`` console command (``main`` in cli/main.py).

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
arguments; returns an exit code or None). Modules import heavy dependencies (torch, the
engine, open_clip) inside ``func``, so ``judgefree --help`` stays fast.
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "main": ("main", "build_parser"),
})
