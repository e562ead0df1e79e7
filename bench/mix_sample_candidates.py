"""How many candidates mix_sample's top-p path handles on a real language model's steps.

    python bench/mix_sample_candidates.py [--out bench/results/mix_sample_candidates_smollm2.md]

The candidate path (docs/mix_sample.md) resolves top-p on the tokens with p >= L =
(1 - top_p)(1 - 2^-8) / V; its cost and whether a chunk overflows CAND_CAP depend on how many
there are, which is a property of the distributions, not of the kernel. This measures it on
the real SmolLM2-135M-Instruct (V = 49152, the project's one real LM): it answers four image
descriptions by sampling (top-p 0.9), then the answers are teacher-forced with the description
(the conditional path) and without it (the unconditional path, as two-path decoding has it),
and each step's mixed distribution is summarised at several T and h: tokens top-p keeps,
candidates, the most candidates in one 2048-token chunk, and the candidates in tau's bucket
(the 16 thresholds of launch 4). No kernel runs: these are counts of the distributions, in
float64 from the model's fp32 logits. A fixed seed; a few minutes on the CPU.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import load_average, write_atomic

from judgefree.kernels.mix_sample_ref import CHUNK
from judgefree.kernels.mix_sample_triton import CAND_CAP, NUM_PIVOTS

DESCRIPTIONS = (
    "The photo shows a red bus parked next to a tall brick building, with two people waiting at the stop "
    "and a dog lying on the pavement.",
    "A kitchen table holds a bowl of oranges, a laptop, a cup of coffee and a stack of books; sunlight "
    "comes through the window.",
    "Three children play football on a green field while an adult watches from a bench under a large oak tree.",
    "A cat sleeps on a blue sofa beside a lamp and a potted plant; a television is on in the background.",
)
QUESTION = "Describe the image in detail."
SETTINGS = ((1.0, 0.0, 0.9), (1.0, 0.5, 0.9), (1.0, 0.5, 0.95), (0.7, 0.0, 0.9), (0.7, 0.5, 0.9))


def step_logits(max_new_tokens: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """[steps, V] conditional and unconditional logits over the model's own sampled answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from judgefree.assets.smollm import smollm2_path

    torch.manual_seed(0)
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def prompt(text):
        chat = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(chat, return_tensors="pt").input_ids[0]

    cond, uncond = [], []
    with torch.no_grad():
        for description in DESCRIPTIONS:
            with_image, without = prompt(description + "\n" + QUESTION), prompt(QUESTION)
            answer = model.generate(with_image[None], max_new_tokens=max_new_tokens, do_sample=True, top_p=0.9,
                                    temperature=1.0)[0, len(with_image):]
            for context, out in ((with_image, cond), (without, uncond)):
                logits = model(torch.cat([context, answer])[None]).logits[0]
                out.append(logits[len(context) - 1:-1])
    return torch.cat(cond), torch.cat(uncond)


def summarise(c: torch.Tensor, u: torch.Tensor, temperature: float, h: float, top_p: float) -> dict[str, list[int]]:
    vocab = c.shape[1]
    chunks = -(-vocab // CHUNK)
    p = ((1 - h) * torch.softmax(c.double() / temperature, -1) + h * torch.softmax(u.double() / temperature, -1))
    bound = (1 - top_p) * (1 - 2.0**-8) / vocab
    candidate = p >= bound
    padded = torch.zeros(p.shape[0], chunks * CHUNK, dtype=torch.bool)
    padded[:, :vocab] = candidate
    ordered = p.sort(-1, descending=True).values
    cumulative = ordered.cumsum(-1)
    kept = (cumulative < top_p * cumulative[:, -1:]).sum(-1) + 1
    tau = ordered.gather(1, (kept - 1)[:, None])[:, 0]
    # tau's bucket among the 16 thresholds launch 4 spreads over [L, p_max] (bit patterns of fp32)
    bits = p.float().view(torch.int32).long()
    lo = int(torch.tensor(bound, dtype=torch.float32).view(torch.int32))
    hi = p.max(-1).values.float().view(torch.int32).long() + 1
    pivots = lo + (torch.arange(NUM_PIVOTS + 1)[None, :] * (hi[:, None] - lo)) // NUM_PIVOTS
    tau_bits = tau.float().view(torch.int32).long()
    b = (pivots[:, :NUM_PIVOTS] <= tau_bits[:, None]).sum(-1) - 1
    t_lo, t_hi = pivots.gather(1, b[:, None]), pivots.gather(1, (b + 1)[:, None])
    in_bucket = ((bits >= t_lo) & (bits < t_hi)).sum(-1)
    return {"kept": kept.tolist(), "candidates": candidate.sum(-1).tolist(),
            "chunk max": padded.view(p.shape[0], chunks, CHUNK).sum(-1).max(-1).values.tolist(),
            "in tau's bucket": in_bucket.tolist()}


def table(c: torch.Tensor, u: torch.Tensor) -> list[str]:
    vocab = c.shape[1]
    lines = [f"SmolLM2-135M-Instruct, V = {vocab}, {c.shape[0]} decode steps; CAND_CAP = {CAND_CAP} per "
             f"{CHUNK}-token chunk. Each cell: median / 90th percentile / max over the steps.", "",
             "| T | h | top-p | kept | candidates (% of V at p90) | most in one chunk | in tau's bucket |",
             "|---|---|---|---|---|---|---|"]
    for temperature, h, top_p in SETTINGS:
        stats = summarise(c, u, temperature, h, top_p)
        cell = lambda xs: " / ".join(str(int(v)) for v in np.percentile(xs, [50, 90, 100]))  # noqa: E731
        share = np.percentile(stats["candidates"], 90) / vocab
        bucket = stats["in tau's bucket"]
        lines.append(f"| {temperature} | {h} | {top_p} | {cell(stats['kept'])} | {cell(stats['candidates'])} "
                     f"({share:.1%}) | {cell(stats['chunk max'])} | {cell(bucket)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    c, u = step_logits()
    lines = ["# mix_sample's top-p candidates on a real LM", "", *table(c, u), "",
             f"Load average after: {' / '.join(f'{x:.2f}' for x in load_average())} (counts, not times)."]
    print("\n".join(lines))
    if args.out:
        write_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
