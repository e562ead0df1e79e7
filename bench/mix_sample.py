"""mix_sample: time, achieved bandwidth and speed-up over a plain PyTorch baseline, measured in
the same run.

    python bench/mix_sample.py [--out bench/results/mix_sample_h100.md]
    python bench/mix_sample.py --smoke     # CPU: the Triton kernels under the interpreter, tiny shapes

The baseline is what one writes without the kernel: two softmaxes, the mix, a sort-based
top-p, torch.multinomial and two gathers for the log-probs. On a GPU: bf16 logits,
B in {1, 64, 256}, V in {32000, 152064}, h drawn per row, temperature 1, top-p 0.9 (the
candidate path runs: these randn x 3 rows have 23-33 % of V as candidates, more than the 9 %
that SmolLM2's steps reach at the 90th percentile) and no filter, called as the engine calls it (per-row tensors,
validate=False); GB/s = bytes of logits read once (both paths) / time, shown as a fraction
of the measured copy bandwidth; the two methods alternate over 3 rounds (median, min-max).
On the CPU the same table runs small with our CPU path (the PyTorch reference: it sorts too,
so expect no speed-up there). ``--smoke`` runs the Triton kernels themselves under the
interpreter on a multi-chunk vocabulary (times meaningless) and checks their tokens against
the CPU path's: the script's GPU code path, exercised without a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from _timing import copy_bandwidth_gbs, device_name, time_us, write_atomic

from judgefree.kernels.mix_sample import mix_sample


def baseline_mix_sample(logits_c, logits_u, h, top_p: float, generator=None):
    """Two softmaxes, mix, sort-based top-p, multinomial; returns (tokens, logprobs, cond)."""
    p = (1 - h[:, None]) * torch.softmax(logits_c.float(), -1) + h[:, None] * torch.softmax(logits_u.float(), -1)
    if top_p < 1:
        sorted_p, order = p.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # mass before a token already reaches top_p
        p = p.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
        p = p / p.sum(-1, keepdim=True)
    tokens = torch.multinomial(p, 1, generator=generator)
    logprobs = p.gather(-1, tokens).log()
    cond = torch.log_softmax(logits_c.float(), -1).gather(-1, tokens)
    return tokens[:, 0], logprobs[:, 0], cond[:, 0]


def run(device: torch.device, rounds: int = 3, smoke: bool = False) -> list[str]:
    gpu = device.type == "cuda"
    batches, vocabs, dtype = ((1, 64, 256), (32000, 152064), torch.bfloat16) if gpu else ((1, 8), (32000,), torch.float32)
    backend, repeats = "auto", 20
    if smoke:  # the kernels under the interpreter: 3 chunks of the draw, one of them partial
        batches, vocabs, rounds, backend, repeats = (2,), (4133,), 1, "triton", 2
    copy_gbs = copy_bandwidth_gbs(device, 1024 if gpu else 256)
    lines = [
        f"# mix_sample on {device_name(device)}",
        f"{dtype} logits, h ~ U(0, 1) per row, temperature 1, per-row parameter tensors and validate=False "
        f"(as the engine calls it); copy bandwidth {copy_gbs:.4g} GB/s; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; median (min-max) of {rounds} interleaved rounds",
        "",
        "| B | V | top-p | ours us | ours GB/s | of copy bw | baseline us | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    gen = torch.Generator().manual_seed(0)
    for vocab in vocabs:
        for batch in batches:
            c = (torch.randn(batch, vocab, generator=gen) * 3).to(device, dtype)
            u = (torch.randn(batch, vocab, generator=gen) * 3).to(device, dtype)
            h = torch.rand(batch, generator=gen).to(device)
            seeds = torch.arange(batch, device=device)
            steps = torch.zeros(batch, dtype=torch.int64, device=device)
            temperature = torch.ones(batch, device=device)
            top_k = torch.zeros(batch, dtype=torch.int32, device=device)
            for top_p in (0.9, 1.0):
                top_p_rows = torch.full((batch,), top_p, device=device)

                def ours(backend=backend):
                    return mix_sample(c, u, h, temperature=temperature, top_k=top_k, top_p=top_p_rows, seeds=seeds,
                                      step=steps, validate=False, backend=backend)

                if smoke and not torch.equal(ours().tokens, ours("torch").tokens):
                    raise RuntimeError(f"the kernels' tokens differ from the CPU path's at B={batch} V={vocab}")

                def base():
                    return baseline_mix_sample(c, u, h, top_p)

                times = {"ours": [], "base": []}
                for _ in range(rounds):  # interleaved: drift hits both alike
                    times["ours"].append(time_us(ours, device, repeats=repeats))
                    times["base"].append(time_us(base, device, repeats=repeats))
                ours_us, base_us = statistics.median(times["ours"]), statistics.median(times["base"])
                gbs = 2 * c.numel() * c.element_size() / (ours_us * 1e-6) / 1e9

                def cell(xs):
                    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"

                lines.append(f"| {batch} | {vocab} | {top_p} | {cell(times['ours'])} | {gbs:.4g} "
                             f"| {gbs / copy_gbs:.0%} | {cell(times['base'])} | {base_us / ours_us:.2f}x |")
                print(lines[-1], flush=True)
    if smoke:
        lines.append("\nSmoke run: 'ours' is the Triton kernels under the interpreter (tokens checked against "
                     "the CPU path); the times mean nothing.")
    elif not gpu:
        lines.append("\nCPU: 'ours' is the PyTorch reference (the CPU path), not the Triton kernel.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="CPU: run the Triton kernels under the interpreter, "
                        "tiny shapes, tokens checked against the CPU path")
    args = parser.parse_args()
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels' module is first imported (lazily)
    lines = run(torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"), args.rounds,
                args.smoke)
    print("\n".join(lines))
    if args.out:
        write_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
