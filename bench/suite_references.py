"""What the distributed tests' one-process references cost as a child process (``run_cli``, or
torchrun with one rank) against the same command in the test's own process (``run_cli_here``),
timed interleaved: the seconds tests/distributed saves per reference it now runs in process.

    python bench/suite_references.py [--rounds 3] [--out bench/results/suite_references_cpu.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, load_average, load_line, spread  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from judgefree.generation.driver import GenerationSettings, generate_store, list_images
    from judgefree.testing.fake_engine import FakeEngine
    from judgefree.testing.holders import run_cli, run_cli_here, run_torchrun
    from judgefree.testing.material import write_photo_files, write_test_clip

    root = Path(tempfile.mkdtemp(prefix="suite-refs-"))
    images = root / "images"
    write_photo_files(images)
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}")
    generate_store(FakeEngine(), list_images(images), root / "pairs",
                   GenerationSettings(model="fake", prompt="Describe image in detail."), progress=False)
    config, weights = write_test_clip(root / "clip")
    runs = iter(range(10**6))

    def generate(run):  # tests/distributed/test_generate_ranks.py's reference
        def go():
            out = root / f"gen-{next(runs)}"
            done = run(["generate", "--model", str(root / "model"), "--images", str(images), "--out", str(out),
                        "--chunk-size", "2", "--device", "cpu", "--no-progress", "--seed", "3"])
            assert done.returncode == 0, done.stderr[-2000:]
        return go

    def curate(run):  # tests/distributed/test_curate_ranks.py's reference
        def go():
            out = root / f"cur-{next(runs)}"
            done = run(["curate", "--pairs", str(root / "pairs"), "--clip", str(config), "--clip-weights", str(weights),
                        "--device", "cpu", "--out", str(out), "--no-progress", "--chunk-size", "2", "--splits", "3",
                        "--keep", "2"])
            assert done.returncode == 0, done.stderr[-2000:]
        return go

    methods = {
        "generate: child process (run_cli)": generate(run_cli),
        "generate: in process (run_cli_here)": generate(run_cli_here),
        "curate: torchrun, 1 rank": curate(lambda argv: run_torchrun(argv, 1, root)),
        "curate: in process (run_cli_here)": curate(run_cli_here),
    }
    before = load_average()
    samples, _ = interleaved(methods, rounds=args.rounds)
    after = load_average()
    lines = ["| reference | median s | min s | max s |", "|---|---|---|---|"]
    for name, seconds in samples.items():
        median, lo, hi = spread(seconds)
        lines.append(f"| {name} | {median:.2f} | {lo:.2f} | {hi:.2f} |")
    for task in ("generate", "curate"):
        child = spread(samples[next(n for n in samples if n.startswith(task) and "in process" not in n)])[0]
        here = spread(samples[f"{task}: in process (run_cli_here)"])[0]
        lines.append(f"\n{task}: in process saves {child - here:.2f} s per reference ({child / here:.1f}x)")
    lines.append(f"\n{args.rounds} rounds, interleaved; " + load_line(before, after))
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
