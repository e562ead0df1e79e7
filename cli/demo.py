"""``judgefree demo``: two-path sampling on a toy scene, on whatever device is here.

A conditional path that "sees" a cat on a sofa and an unconditional path that only knows
the prior (dog, table, tv) are mixed with growing h; the share of hallucinated words drawn
follows h. Then the Triton kernel (on the CPU: through the interpreter) draws the same
tokens as the PyTorch path for the same seeds.
"""

from __future__ import annotations

import argparse
import os

SEEN = ("cat", "sofa", "window", "cushion")
PRIOR = ("dog", "table", "tv", "lamp")
FILLER = ("a", "the", "on", "near", "is", "and", "sits", "room")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="show two-path mix-and-sample on a toy scene",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=4000, help="samples per h value (default 4000)")
    parser.add_argument("--kernel-rows", type=int, default=12,
                        help="rows drawn by the Triton kernel to compare with the PyTorch path")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.draws < 1 or args.kernel_rows < 0:
        raise ValueError("--draws must be >= 1 and --kernel-rows >= 0")
    if not torch.cuda.is_available():  # before the first @triton.jit runs
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from judgefree.kernels.mix_sample import mix_sample

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    words = SEEN + PRIOR + FILLER
    cond = torch.tensor([3.0] * len(SEEN) + [0.5] * len(PRIOR) + [1.5] * len(FILLER), device=device)
    uncond = torch.tensor([0.5] * len(SEEN) + [3.0] * len(PRIOR) + [1.5] * len(FILLER), device=device)
    prior = torch.zeros(len(words), dtype=torch.bool, device=device)
    prior[len(SEEN):len(SEEN) + len(PRIOR)] = True
    n = args.draws
    print(f"toy scene: the image shows {', '.join(SEEN)}; the unconditional prior favours {', '.join(PRIOR)}")
    print(f"{n} draws per h on {device}; t = (1-h) softmax(l_c) + h softmax(l_u)\n")
    print(f"{'h':>5} | {'hallucinated share':>18} | {'expected':>8} | most drawn")
    for h in (0.0, 0.25, 0.5, 0.75, 1.0):
        seeds = torch.arange(n, device=device) + args.seed * n
        out = mix_sample(cond.expand(n, -1), uncond.expand(n, -1), h, seeds=seeds, step=0, backend="torch")
        p = (1 - h) * torch.softmax(cond, -1) + h * torch.softmax(uncond, -1)
        counts = torch.bincount(out.tokens, minlength=len(words))
        top = ", ".join(f"{words[i]} {int(counts[i])}" for i in counts.argsort(descending=True)[:4].tolist())
        share = prior[out.tokens].float().mean().item()
        print(f"{h:5.2f} | {share:18.3f} | {p[prior].sum().item():8.3f} | {top}")

    rows = args.kernel_rows
    if rows:
        seeds = torch.arange(rows, device=device) + 1000
        h = torch.linspace(0, 1, rows, device=device)
        kernel = mix_sample(cond.expand(rows, -1), uncond.expand(rows, -1), h, seeds=seeds, step=3,
                            top_p=0.9, backend="triton")
        torch_path = mix_sample(cond.expand(rows, -1), uncond.expand(rows, -1), h, seeds=seeds, step=3,
                                top_p=0.9, backend="torch")
        same = int((kernel.tokens == torch_path.tokens).sum())
        where = "the Triton interpreter" if device.type == "cpu" else "the GPU"
        print(f"\nTriton kernel on {where}, top-p 0.9, h from 0 to 1: {same}/{rows} tokens identical to the PyTorch path")
        print("  kernel:", " ".join(words[i] for i in kernel.tokens.tolist()))
        if same != rows:
            print("  torch: ", " ".join(words[i] for i in torch_path.tokens.tolist()))
            return 1
    return 0
