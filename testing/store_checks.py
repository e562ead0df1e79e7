"""What "the store is valid" means in the fault tests, checked from the outside: the manifest
reads, every shard matches its size, sha256 and rows, ``pairs/`` holds exactly the listed
shards (so pandas reads exactly the pairs), and no temporary or staged file is left."""

from __future__ import annotations

from pathlib import Path

from judgefree.store.pair_store import PAIRS, STAGING, PairStore


def assert_valid_store(path: Path, *, settled: bool = True) -> PairStore:
    """``settled``: no writer stopped half-way since the last one finished (no leftovers)."""
    store = PairStore(path)
    assert store.check() == len(store)
    if settled:
        import pandas as pd

        listed = sorted(p.name for p in store.shard_paths())
        assert sorted(p.name for p in (path / PAIRS).iterdir()) == listed
        if listed:
            assert len(pd.read_parquet(path / PAIRS)) == len(store)
        assert not (path / STAGING).exists()
        assert not [p for p in path.rglob("*.tmp")]
    return store


def rows(path: Path) -> list[dict]:
    """The stored pairs as plain rows, in stored order."""
    return [record.to_row() for record in PairStore(path).records()]
