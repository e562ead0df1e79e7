"""Data-parallel generation: `judgefree generate` on 1 process against N processes (torchrun).

    python bench/data_parallel.py                   # CPU: 1 vs 2 processes, one thread each
    python bench/data_parallel.py --gpu             # GPU: 1 vs every GPU of the node

Each round runs the same command into a fresh store once per process count, the counts
interleaved (1, N, 1, N, ...), so a change of machine load hits both; the table gives medians
over the rounds with min and max. Two rates per run: "job" is the pairs over the driver's own
time (rank 0's report: from the moment every rank has its engine loaded and holds the store's
lock to the folded manifest),
"wall" the pairs over the whole command (process start, imports, model load included).
Scaling efficiency = rate(N) / (N * rate(1)). The load average before each round is recorded:
on a shared 2-core machine another job's load lowers the N-process numbers most. The stores of
1 and N processes are compared row for row (ordered by image) after every round: a benchmark
that changes the result does not count.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import device_name, write_atomic  # bench/ is on sys.path


def _photos(folder: Path, count: int) -> None:
    from generate import distinct_photos  # bench/generate.py: real photos, shifted crops
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(distinct_photos(count)):
        Image.fromarray(photo).save(folder / f"{i:04d}.png")


def _run(nproc: int, model: Path, images: Path, out: Path, args: argparse.Namespace) -> tuple[float, float, int]:
    """(job seconds, wall seconds, pairs) of one `judgefree generate` with ``nproc`` processes."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "judgefree", "generate", "--model", str(model), "--images", str(images), "--out", str(out),
               "--chunk-size", str(args.chunk_size), "--max-new-tokens", str(args.new_tokens), "--no-progress",
               "--device", "cuda" if args.gpu else "cpu", "--dtype", "bfloat16" if args.gpu else "float32"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{nproc} processes failed:\n{done.stderr[-4000:]}")
    match = re.search(r"(\d+) pairs generated, .*?([\d.]+) s\n", done.stdout)
    if match is None:
        raise SystemExit(f"no report in the output of {nproc} processes:\n{done.stdout[-2000:]}")
    return float(match.group(2)), wall, int(match.group(1))


def _rows(store: Path) -> list[dict]:
    from judgefree.store.pair_store import PairStore

    return sorted((r.to_row() for r in PairStore(store).records()), key=lambda row: row["image"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="1 GPU against every GPU of this node")
    parser.add_argument("--model", default=None, help="model folder (default: the tiny random LLaVA)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--nproc", type=int, default=None, help="processes of the parallel run (default: 2 on "
                        "the CPU, every GPU with --gpu)")
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the table here too (markdown)")
    args = parser.parse_args()
    import torch

    nproc = args.nproc or (torch.cuda.device_count() if args.gpu else 2)
    work = Path(tempfile.mkdtemp(prefix="bench_dp_"))
    try:
        if args.model:
            model = Path(args.model)
        else:
            from judgefree.assets.checkpoints import build_tiny_llava

            model = build_tiny_llava(work / "llava", gqa=True, seed=1)
        images = work / "images"
        _photos(images, args.images)
        results: dict[int, list[tuple[float, float, int]]] = {1: [], nproc: []}
        loads = []
        for round_ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            stores = {}
            for n in (1, nproc):
                stores[n] = work / f"store-{round_}-{n}"
                results[n].append(_run(n, model, images, stores[n], args))
            if _rows(stores[1]) != _rows(stores[nproc]):
                raise SystemExit(f"round {round_}: {nproc} processes wrote another store than 1 process")
            for store in stores.values():
                shutil.rmtree(store)
            print(f"round {round_}: load {loads[-1]:.2f}, " + ", ".join(
                f"{n} proc: job {results[n][-1][0]:.2f} s, wall {results[n][-1][1]:.2f} s" for n in results),
                file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rate(n: int, which: int) -> list[float]:
        return [r[2] / r[which] for r in results[n]]

    where = device_name(torch.device("cuda")) if args.gpu else f"CPU ({os.cpu_count()} cores), {args.threads} thread(s) per process"
    lines = [f"data-parallel `judgefree generate`: {args.images} images, chunk {args.chunk_size}, {args.new_tokens} "
             f"new tokens per response, {args.rounds} rounds interleaved; {where}; model: "
             f"{args.model or 'tiny random LLaVA'}; load average before each round: "
             + ", ".join(f"{x:.2f}" for x in loads), "",
             "| processes | pairs | job pairs/s median (min-max) | wall pairs/s median (min-max) | job efficiency | wall efficiency |",
             "|---|---|---|---|---|---|"]
    base_job, base_wall = statistics.median(rate(1, 0)), statistics.median(rate(1, 1))
    for n in (1, nproc):
        job, wall = rate(n, 0), rate(n, 1)
        lines.append(f"| {n} | {results[n][0][2]} | {statistics.median(job):.3f} ({min(job):.3f}-{max(job):.3f}) | "
                     f"{statistics.median(wall):.3f} ({min(wall):.3f}-{max(wall):.3f}) | "
                     f"{statistics.median(job) / (n * base_job):.0%} | {statistics.median(wall) / (n * base_wall):.0%} |")
    lines += ["", f"stores of 1 and {nproc} processes equal row for row in every round"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_atomic(args.out, text)


if __name__ == "__main__":
    main()
