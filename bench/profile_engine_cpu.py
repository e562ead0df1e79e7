"""Where the CPU engine's time goes: a cProfile of one ``generate_pairs`` call, by concern.

    python bench/profile_engine_cpu.py [--images 8] [--new-tokens 32] [--smollm2] [--rounds 2] [--out FILE]

The tiny random LLaVA of bench/generate.py (Llama 4x128 with SmolLM2's vocabulary of 49152,
CLIP 112 px: 64 image tokens), or with --smollm2 the LLaVA on SmolLM2-135M; one pair per image,
EOS ignored, temperature 1, 1 thread, after a warm-up call on the same images. Two versions of the CPU
attention in the same engine, profiled in alternation (--rounds each, the median shown):
"after", today's ``paged_attention_torch`` (decode and prefill), and "before", the CPU paths
they replaced (decode: bench/paged_attention.py's ``block_gather_einsum_decode``; prefill:
``paged_prefill_attention_ref``). Prints the total and the
cumulative time of decode attention, prefill attention, row_flags, Philox, prompt building,
the linear layers and mix_sample, and a hash of every token id per version (equal hashes:
the same tokens).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import load_average, load_line, write_atomic
from generate import PROMPT, distinct_photos
from paged_attention import block_gather_einsum_decode

from judgefree.engine import Engine, SamplingParams
from judgefree.kernels.paged_attention_ref import paged_prefill_attention_ref

# concern -> (file suffix, function name) whose cumulative time it is
CONCERNS = {
    "decode attention": ("paged_attention_torch.py", "paged_decode_attention_torch"),
    "decode attention (before)": ("paged_attention.py", "block_gather_einsum_decode"),
    "prefill attention": ("paged_attention_torch.py", "paged_prefill_attention_torch"),
    "prefill attention (before)": ("paged_attention_ref.py", "paged_prefill_attention_ref"),
    "store_kv": ("paged_attention_ref.py", "store_kv_ref"),
    "row_flags": ("mix_sample_ref.py", "row_flags"),
    "Philox (uniform_noise)": ("philox.py", "uniform_noise"),
    "mix_sample (all of it)": ("mix_sample.py", "mix_sample"),
    "prompt building": ("prompts.py", "build"),
    "batch inputs (_prepare)": ("model_runner.py", "_prepare"),
    "all linear layers": ("linear.py", "forward"),
}


def profile(engine, images, kwargs) -> tuple[float, dict[str, float], str]:
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    pairs = engine.generate_pairs(images, PROMPT, **kwargs)
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats
    shares = {}
    for concern, (suffix, name) in CONCERNS.items():
        shares[concern] = sum(s[3] for (file, _, func), s in stats.items() if file.endswith(suffix) and func == name)
    digest = hashlib.sha256()
    for pair in pairs:
        for c in (pair.chosen, pair.rejected):
            if c.error:
                raise RuntimeError(f"generation failed: {c.error}")
            digest.update(repr(list(c.token_ids)).encode())
    return total, shares, digest.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--smollm2", action="store_true", help="LLaVA on SmolLM2-135M instead of the tiny LLaVA")
    parser.add_argument("--rounds", type=int, default=2, help="profiles per version, alternated")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from judgefree.assets.checkpoints import build_tiny_llava, demo_llava_path

    with tempfile.TemporaryDirectory() as tmp:
        if args.smollm2:
            folder, title = demo_llava_path(), "LLaVA on SmolLM2-135M"
        else:
            folder = build_tiny_llava(Path(tmp) / "tiny-llava", hidden=128, layers=4, image_size=112, patch_size=14, seed=0)
            title = "tiny random LLaVA (Llama 4x128)"
        engine = Engine.from_pretrained(folder, max_model_len=1024, max_kv_blocks=4096)
        images = distinct_photos(args.images)
        kwargs = dict(sampling=SamplingParams(temperature=1.0, ignore_eos=True), max_new_tokens=args.new_tokens, seed=0)
        # warm-up on every image: each profile then finds the same prompts in the prefix cache
        engine.generate_pairs(images, PROMPT, **{**kwargs, "max_new_tokens": 4})
        after_ops = engine.runner.attention_ops
        versions = {"after": after_ops,
                    "before": after_ops._replace(decode=block_gather_einsum_decode, prefill=paged_prefill_attention_ref)}
        results = {name: [] for name in versions}
        start_load = load_average()
        for r in range(args.rounds):
            for name in (list(versions) if r % 2 == 0 else list(versions)[::-1]):
                engine.runner.attention_ops = versions[name]
                results[name].append(profile(engine, images, kwargs))
        end_load = load_average()
    lines = [f"# {title}: {args.images} pairs, {args.new_tokens} new tokens, 1 thread, cProfile, "
             f"{args.rounds} profiles per version alternated, median seconds (cumulative per concern)",
             load_line(start_load, end_load), "",
             "| concern | before s | share | after s | share |", "|---|---|---|---|---|"]
    med = {}
    for name, runs in results.items():
        med[name] = {"generate_pairs total": statistics.median(total for total, _, _ in runs)}
        for concern in CONCERNS:
            med[name][concern] = statistics.median(shares[concern] for _, shares, _ in runs)
    for concern in ["generate_pairs total", *CONCERNS]:
        cells = [f"{med[v][concern]:.2f} | {med[v][concern] / med[v]['generate_pairs total']:.0%}" for v in ("before", "after")]
        lines.append(f"| {concern} | {' | '.join(cells)} |")
    hashes = {name: sorted({digest for _, _, digest in runs}) for name, runs in results.items()}
    lines += ["", f"token ids hash: before {', '.join(hashes['before'])}; after {', '.join(hashes['after'])}"
              + (" (identical)" if hashes["before"] == hashes["after"] and len(hashes["after"]) == 1 else " (DIFFER)")]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_atomic(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
