"""``judgefree world build``: the world's CLIP and seed m0, trained here (docs/world.md).

Deterministic from its parameters, cached under the assets cache ($JUDGEFREE_CACHE or
~/.cache/judgefree) as world-<key>; a second call returns the cached folder at once.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("world", help="the procedural world with exact truth: build its CLIP and seed m0",
                              description=__doc__)
    sub = p.add_subparsers(dest="world_command", metavar="ACTION")
    b = sub.add_parser("build", help="build (or find in the cache) the world's CLIP and m0")
    b.add_argument("--cache-dir", default=None, help="cache folder (default: the assets cache)")
    b.add_argument("--small", action="store_true", help="the CI test's smaller world")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from judgefree.world.build import world_folder
    from judgefree.world.config import SMALL, WorldConfig

    if getattr(args, "world_command", None) != "build":
        raise ValueError("judgefree world: the action is `build`")
    folder = world_folder(SMALL if args.small else WorldConfig(), args.cache_dir)
    built = json.loads((folder / "build.json").read_text())
    m = built["m0_eval"]
    print(f"world: {folder}\n  CLIP: {folder / 'clip'}\n  m0:   {folder / 'm0'}\n  built in {built['seconds']:.0f} s; "
          f"m0 on {m['captions']} evaluation scenes: CHAIRs {m['chair_s']:.1%} CHAIRi {m['chair_i']:.1%} "
          f"recall {m['recall']:.1%} attribute errors {m['attribute_error']:.1%}")
    _stale_hint(folder.parent)
    return 0


def _stale_hint(root) -> None:
    """Worlds of older versions are never read again; say how to remove them (not done here:
    the cache may be shared with a checkout of another version)."""
    from judgefree.assets.cache import entries
    from judgefree.cli.cache import state

    stale = [e for e in entries(root) if state(e) == "stale"]
    if stale:
        print(f"  {len(stale)} worlds of other versions in {root} ({sum(e.bytes for e in stale) / 2**20:.0f} MB): "
              "`judgefree cache list` shows them, `judgefree cache prune` removes them")
