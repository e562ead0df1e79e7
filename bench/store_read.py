"""What reading a pair store costs with its integrity checks (size + sha256 + rows of every
shard, docs/pair_store.md) against reading the folder of pairs without any check.

    python bench/store_read.py [--pairs 20000] [--tokens 256] [--shard-rows 1000] [--rounds 7]

Baseline: ``pyarrow.dataset.dataset(STORE/pairs).to_table()``, the strongest plain read a user
would run (multi-threaded, no checks). Methods are interleaved per round; medians reported with
the load average. On a CPU only the ratios mean anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def build(folder: Path, pairs: int, tokens: int, shard_rows: int) -> None:
    from judgefree.store.pair_store import StoreWriter
    from judgefree.store.records import PairRecord

    rng = np.random.default_rng(0)

    def record(i: int) -> PairRecord:
        ids = rng.integers(0, 32000, size=(2, tokens)).tolist()
        lps = (-rng.random((4, tokens)) * 5).astype(np.float32).tolist()
        return PairRecord(
            pair_id=f"{i:020d}", image=f"/data/images/{i:08d}.jpg", image_hash="h" * 64, image_sha256="s" * 64,
            prompt="Describe this image in detail.", prompt_token_ids=list(range(600)),
            chosen_text=" ".join(map(str, ids[0][:60])), chosen_token_ids=ids[0], chosen_h=0.0, chosen_seed=i,
            chosen_cond_logprobs=lps[0], chosen_logprobs=lps[1], chosen_finish_reason="stop",
            rejected_text=" ".join(map(str, ids[1][:60])), rejected_token_ids=ids[1], rejected_h=0.5,
            rejected_seed=-i, rejected_cond_logprobs=lps[2], rejected_logprobs=lps[3], rejected_finish_reason="length")

    with StoreWriter(folder, stage="generated", settings={"bench": True}) as writer:
        for start in range(0, pairs, shard_rows):
            writer.append([record(i) for i in range(start, min(pairs, start + shard_rows))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--shard-rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()

    import pyarrow.dataset as ds

    from judgefree.store.pair_store import PairStore

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        build(folder, args.pairs, args.tokens, args.shard_rows)
        size = sum(p.stat().st_size for p in (folder / "pairs").iterdir())
        methods = {
            "pyarrow.dataset(pairs/) (no checks)": lambda: ds.dataset(folder / "pairs", format="parquet").to_table(),
            "PairStore.table(), verify=False (rows)": lambda: PairStore(folder, verify=False).table(),
            "PairStore.table() (size+sha256+rows)": lambda: PairStore(folder).table(),
        }
        for fn in methods.values():  # warm the page cache and the imports
            assert fn().num_rows == args.pairs
        samples = {name: [] for name in methods}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for name, fn in methods.items():
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
        load = (load + os.getloadavg()[0]) / 2
    base = statistics.median(samples[next(iter(methods))])
    lines = [f"{args.pairs} pairs, {args.tokens} tokens per response, {args.pairs // args.shard_rows} shards, "
             f"{size / 2**20:.1f} MiB on disk; {os.cpu_count()} CPUs, load average {load:.2f}; medians of "
             f"{args.rounds} interleaved rounds",
             f"{'method':42s} {'seconds':>8s} {'MiB/s':>8s} {'vs baseline':>12s}"]
    for name, values in samples.items():
        median = statistics.median(values)
        lines.append(f"{name:42s} {median:8.3f} {size / 2**20 / median:8.0f} {median / base:11.2f}x")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(f"# bench/store_read.py --pairs {args.pairs} --tokens {args.tokens}\n{text}\n")


if __name__ == "__main__":
    main()
