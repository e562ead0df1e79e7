"""DPO step throughput and peak memory: judgefree's trainer step against TRL's DPOTrainer and a
plain eager DPO step (full logits), on the same model, the same pairs and the same LoRA, in one run.

    python bench/dpo.py                              # CPU: the real SmolLM2-135M, text pairs, fp32
    python bench/dpo.py --device cuda                # GPU: LLaVA-1.5-7B shapes (random weights), bf16
    python bench/dpo.py --device cuda --shape llama-7b   # GPU: its language model alone (TRL runs too)

Systems (each in its own subprocess, one after the other, so peak memory is per system):
  ours            judgefree.train.trainer.dpo_step: hidden states -> response rows -> linear_logprobs;
                  reference log-probs come with the pairs (recorded by the engine), no reference forward
  eager           the same step written plainly: model(...).logits -> log_softmax -> gather
  trl             trl.DPOTrainer as shipped: reference from a forward with the LoRA adapter disabled
  trl-precomputed trl.DPOTrainer(precompute_ref_log_probs=True): reference pass before training, untimed
Every system sees the same token ids (TRL gets them pre-tokenized), LoRA r=16 on all projections,
AdamW, batch of --pairs pairs per step. Tokens/s = fed tokens (prompt + response, both rows of a
pair) / median step time after --warmup steps. Memory is measured on one more, untimed step
(resetting the RSS peak hands freed pages back to the OS, and faulting them in again is slow
on this VM): CUDA max_memory_allocated, or on the CPU the process's peak RSS (VmHWM reset
through /proc/self/clear_refs) and the peak of live tensor bytes from the profiler.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from dpo_systems import LLAVA_7B_TEXT, make_pairs, run_ours_or_eager  # bench/ is on sys.path

SYSTEMS = ("ours", "eager", "trl", "trl-precomputed")


def _shapes(args) -> dict:
    if args.shape == "smollm2":
        return {"prompt_len": args.prompt_len or 32, "response_len": args.response_len or 128, "image_tokens": 0}
    return {"prompt_len": args.prompt_len or 48, "response_len": args.response_len or 256,
            "image_tokens": 576 if args.shape.startswith("llava") else 0}


def worker(args) -> None:
    pairs = json.loads(Path(args.data).read_text())
    if args.worker.startswith("trl"):
        from dpo_trl import run_trl as run
    else:
        run = run_ours_or_eager
    result = run(args.worker, args, pairs)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--shape", default=None, choices=("smollm2", "llava-7b", "llama-7b", "llava-tiny", "llama-tiny"),
                        help="default: smollm2 on the CPU, llava-7b on CUDA")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per step (default 2 CPU, 4 GPU)")
    parser.add_argument("--prompt-len", type=int, default=None)
    parser.add_argument("--response-len", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per system")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    parser.add_argument("--workdir", default="/tmp/judgefree-bench-dpo")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.shape = args.shape or ("smollm2" if args.device == "cpu" else "llava-7b")
    args.pairs = args.pairs or (2 if args.device == "cpu" else 4)
    if args.worker:
        worker(args)
        return 0
    return compare(args)


def compare(args) -> int:
    from judgefree.io import write_atomic

    shapes = _shapes(args)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    tokenizer = None
    if args.shape == "smollm2":
        from transformers import AutoTokenizer

        from judgefree.assets.smollm import smollm2_path

        tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    vocab = LLAVA_7B_TEXT["vocab_size"] if tokenizer is None else len(tokenizer)
    pairs = make_pairs(tokenizer, 4 * args.pairs, shapes["prompt_len"], shapes["response_len"], vocab,
                       shapes["image_tokens"], 32000)
    data = Path(args.workdir) / "pairs.json"
    data.write_text(json.dumps(pairs))
    load_start = os.getloadavg()[0]
    results = {}
    for system in args.systems.split(","):
        if system.startswith("trl") and args.shape.startswith("llava"):
            print(f"{system}: skipped for LLaVA shapes (TRL's vision path needs raw images; see --shape llama-7b)")
            continue
        command = [sys.executable, __file__, "--worker", system, "--data", str(data), "--device", args.device,
                   "--shape", args.shape, "--pairs", str(args.pairs), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--workdir", args.workdir]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"{system}: failed (exit {done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        results[system] = json.loads(lines[-1][len("RESULT "):])
        print(f"{system}: median step {statistics.median(results[system]['times']):.3f} s", flush=True)
    table = _table(args, shapes, results, load_start)
    print(table)
    if args.out:
        write_atomic(Path(args.out), (table + "\n").encode())
    return 0 if "ours" in results else 1


def _table(args, shapes, results, load_start) -> str:
    import platform

    import torch

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    lines = [f"DPO step, {args.shape} + LoRA r=16 (all projections), {args.pairs} pairs/step, prompt "
             f"{shapes['prompt_len']}{' + 576 image' if shapes['image_tokens'] else ''} tokens, responses "
             f"{shapes['response_len']} tokens, {'bf16' if args.device == 'cuda' else 'fp32'}; device: {device}, "
             f"torch {torch.__version__}, Python {platform.python_version()}; median of {args.steps} steps after "
             f"{args.warmup} warm-up; load average at start {load_start:.1f}", "",
             "| system | step (s) | tokens/s | ours' speed / speed | peak memory (MiB) | step memory (MiB) "
             "| step tensors (MiB) | its step tensors / ours | loss step 1 |", "|---|---|---|---|---|---|---|---|---|"]
    ours = results.get("ours")
    ours_speed = ours["tokens"] / statistics.median(ours["times"]) if ours else float("nan")
    def tensor_mib(r):  # CUDA: allocations above the resting level; CPU: the profiler's replay
        return r["tensor_peak_mib"] if r.get("tensor_peak_mib") is not None else r["peak_mib"] - r["resting_mib"]

    for name, r in results.items():
        step = statistics.median(r["times"])
        speed = r["tokens"] / step
        ratio = tensor_mib(r) / max(tensor_mib(ours), 1e-9) if ours else float("nan")
        loss = f"{r['losses'][0]:.4f}" if r["losses"] else "n/a"
        lines.append(f"| {name} | {step:.3f} | {speed:.0f} | {ours_speed / speed:.2f}x | {r['peak_mib']:.0f} "
                     f"| {r['peak_mib'] - r['resting_mib']:.0f} | {tensor_mib(r):.0f} | {ratio:.2f}x | {loss} |")
    if args.device == "cuda":
        lines += ["", "memory, on one more untimed step: peak = CUDA max_memory_allocated; step memory and step "
                  "tensors: that peak minus what was allocated just before it (weights, optimizer state, data)."]
    else:
        lines += ["", "memory, on one more untimed step: peak = the process's peak RSS (VmHWM); step memory = that "
                  "peak minus the RSS just before the step (after gc and malloc_trim); step tensors = peak of "
                  "live tensor bytes allocated during the step, from the profiler's allocation events replayed "
                  "in order. Peak RSS also counts each library's own buffers (TRL: accelerate, datasets)."]
    lines += [
              f"load average at end {os.getloadavg()[0]:.1f} (the machine's cores may be shared)"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
