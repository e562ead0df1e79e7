"""``judgefree store``: check a pair store, or upgrade one written by an older judgefree.

``judgefree store check STORE`` reads every shard and compares it with the size, sha256 and row
count its manifest recorded; ``judgefree store migrate STORE`` upgrades a store of schema version 1
(shards beside manifest.json) in place to the current layout (shards in STORE/pairs/).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("store", help="check or upgrade a pair store", description=__doc__)
    p.set_defaults(func=lambda args: p.print_help())
    actions = p.add_subparsers(dest="store_action", metavar="ACTION")
    check = actions.add_parser("check", help="read every shard and check it against the manifest")
    check.add_argument("store", help="pair store folder")
    check.set_defaults(func=_check)
    migrate = actions.add_parser("migrate", help="upgrade a store of an older layout in place")
    migrate.add_argument("store", help="pair store folder")
    migrate.set_defaults(func=_migrate)


def _check(args: argparse.Namespace) -> int:
    from judgefree.store.pair_store import PairStore

    store = PairStore(args.store)
    rows = store.check()
    print(f"{args.store}: {store.stage} store, {len(store.manifest['shards'])} shards, {rows} pairs, "
          f"{len(store.skipped)} skipped entries: every shard matches its recorded size, sha256 and rows")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from judgefree.store.migrate import migrate_store

    changed = migrate_store(args.store)
    print(f"{args.store}: {'upgraded to' if changed else 'already in'} the current layout (shards in pairs/)")
    return 0
