"""The engine's sampling step (lm_head rows -> mix_sample -> host lists) inside a small engine
run: wall time of ``ModelRunner._sample`` and of the whole ``generate``, per round.

    python bench/engine_sampling_step.py [--rounds 5] [--before OLD_model_runner.py] [--out FILE]

A tiny random Llama (SmolLM2's tokenizer), 16 two-path responses (h > 0, a context), top-p
0.9, 24 new tokens each, EOS ignored; the first round is a warm-up. Medians over the rounds
with min/max, and the load average. ``--before`` takes ``ModelRunner._sample`` from another
version of engine/model_runner.py (e.g. ``git show REV:engine/model_runner.py > old.py``)
and interleaves its rounds with the current one's in the same engine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _timing import device_name, write_atomic

from judgefree.assets.checkpoints import build_tiny_llama
from judgefree.engine import Engine, Request, SamplingParams
from judgefree.engine.model_runner import ModelRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", help="an older engine/model_runner.py to interleave with")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spent = [0.0]
    methods = {"current": ModelRunner._sample}
    if args.before:
        spec = importlib.util.spec_from_file_location("model_runner_before", args.before)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        methods["before"] = module.ModelRunner._sample
    active = ["current"]

    def timed(self, *a, **kw):
        start = time.perf_counter()
        try:
            return methods[active[0]](self, *a, **kw)
        finally:
            spent[0] += time.perf_counter() - start

    ModelRunner._sample = timed
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_llama(Path(tmp) / "llama", gqa=True, seed=3)
        engine = Engine.from_pretrained(folder, max_model_len=256, max_kv_blocks=512)
        sampling = SamplingParams(temperature=1.0, top_p=0.9, ignore_eos=True)
        requests = [Request("Continue the story.", context=f"Once upon a time {i}", h=0.3 + 0.02 * i,
                            sampling=sampling, seed=i, max_new_tokens=24) for i in range(16)]
        sample_ms = {name: [] for name in methods}
        total_ms = {name: [] for name in methods}
        tokens = {}
        for round_ in range(args.rounds + 1):
            for name in methods:  # interleaved
                active[0] = name
                spent[0] = 0.0
                start = time.perf_counter()
                done = engine.generate(requests)
                tokens.setdefault(name, [c.token_ids for c in done])
                if round_:  # round 0 warms up
                    total_ms[name].append((time.perf_counter() - start) * 1e3)
                    sample_ms[name].append(spent[0] * 1e3)
        assert all(t == tokens["current"] for t in tokens.values()), "the versions sampled different tokens"

    def cell(xs):
        return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"

    lines = [f"# engine sampling step on {device_name(torch.device('cpu'))}, load average "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
             f"16 two-path responses x 24 tokens, top-p 0.9; median (min-max) over {args.rounds} rounds", "",
             "| version | ModelRunner._sample ms per generate | generate ms |", "|---|---|---|"]
    lines += [f"| {name} | {cell(sample_ms[name])} | {cell(total_ms[name])} |" for name in methods]
    print("\n".join(lines))
    if args.out:
        write_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
