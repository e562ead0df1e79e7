"""``judgefree cache``: see and prune the assets cache ($JUDGEFREE_CACHE or ~/.cache/judgefree).

``judgefree cache list`` shows every folder with its size and state: ``current`` (a world this
version builds), ``stale`` (the world of another version: its parameters changed, so this version
never reads it; a checkout of that version sharing the cache would build it again), ``leftover``
(the temporary folder of a killed build), or ``other`` (an asset this command does not judge: the
converted SmolLM2, the demo models). ``judgefree cache prune`` removes the stale and leftover
ones; ``prune NAME ...`` removes the named entries (any state, e.g. to force a rebuild: a job
reading that folder at the time loses it); ``--dry-run`` only says what would go. A folder being
built is never removed (its build lock is held): it is reported and kept.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cache", help="list or prune the assets cache (built worlds, converted models)",
                              description=__doc__)
    p.set_defaults(func=lambda args: p.print_help())
    actions = p.add_subparsers(dest="cache_action", metavar="ACTION")
    listing = actions.add_parser("list", help="every cached folder with its size and state")
    listing.add_argument("--cache-dir", default=None, help="cache folder (default: the assets cache)")
    listing.set_defaults(func=_list)
    prune = actions.add_parser("prune", help="remove stale worlds and leftovers of killed builds (or NAMEs)")
    prune.add_argument("names", nargs="*", metavar="NAME", help="entries to remove (default: stale and leftover)")
    prune.add_argument("--cache-dir", default=None, help="cache folder (default: the assets cache)")
    prune.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    prune.set_defaults(func=_prune)


def state(entry) -> str:
    from judgefree.world.build import current_cache_names, is_world_cache

    if entry.leftover:
        return "leftover"
    if is_world_cache(entry.name):
        return "current" if entry.name in current_cache_names() else "stale"
    return "other"


def _root(args: argparse.Namespace):
    from pathlib import Path

    from judgefree.assets.cache import default_cache_dir

    return Path(args.cache_dir) if args.cache_dir is not None else default_cache_dir()


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _list(args: argparse.Namespace) -> int:
    from judgefree.assets.cache import entries

    root = _root(args)
    found = entries(root)
    print(f"cache {root}: {len(found)} entries, {_mb(sum(e.bytes for e in found))}")
    for entry in found:
        note = "" if entry.complete or entry.leftover else " (incomplete)"
        print(f"  {state(entry):<8} {_mb(entry.bytes):>10}  {entry.path.name}{note}")
    prunable = [e for e in found if state(e) in ("stale", "leftover")]
    if prunable:
        print(f"{len(prunable)} stale or leftover ({_mb(sum(e.bytes for e in prunable))}): "
              "`judgefree cache prune` removes them")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from judgefree.assets.cache import entries, remove_entry

    root = _root(args)
    found = entries(root)
    if args.names:
        by_name = {e.path.name: e for e in found}
        unknown = [n for n in args.names if n not in by_name]
        if unknown:
            raise ValueError(f"no cache entry {', '.join(unknown)} in {root} (`judgefree cache list` shows them)")
        chosen = [by_name[n] for n in dict.fromkeys(args.names)]
    else:
        chosen = [e for e in found if state(e) in ("stale", "leftover")]
    freed, busy = 0, []
    for entry in chosen:
        if args.dry_run:
            print(f"would remove {entry.path.name} ({state(entry)}, {_mb(entry.bytes)})")
            freed += entry.bytes
        elif remove_entry(entry):
            print(f"removed {entry.path.name} ({state(entry)}, {_mb(entry.bytes)})")
            freed += entry.bytes
        else:
            busy.append(entry.path.name)
            print(f"kept {entry.path.name}: it is being built now")
    print(f"{'would free' if args.dry_run else 'freed'} {_mb(freed)} in {root}"
          + (f"; {len(busy)} kept (being built)" if busy else ""))
    return 0
