"""How many backward tiles gradient filtering keeps on REAL DPO data, and what it drops.

The kernel model's filtered estimates (docs/linear_logprobs.md) depend on the fraction of
[row tile x vocab tile] pairs that survive filtering, a property of the model and its data.
This measures it on the real SmolLM2-135M-Instruct (``judgefree.assets.smollm``: H = 576,
V = 49152) in the DPO case at round 0 (policy = reference):

1. The engine samples a pair per prompt, text-only two-path decoding: the conditional path
   sees a scene description (the image's role for a text model), the unconditional path the
   instruction alone; chosen at h = 0, rejected at h ~ N(0.5, 0.15) clipped to [0, 1] (the
   README's ``--h-rejected gaussian:0.5,0.15``).
2. transformers teacher-forces conditional prompt + response (what the trainer scores) and
   keeps the final hidden rows at response positions, in the trainer's order.
3. The filter's own decision, on the CPU: each row's largest logit per 128-wide vocab tile,
   the log-sum-exp and the target's log-probability go through
   ``kernels.linear_logprobs_filter.live_tiles`` (what the Triton forward hands the backward),
   at the backward's tiles (128 x 128 with the weight gradient, 128 x 256 frozen).
4. The gradient error: with the round-0 DPO upstream gradient (every token of a chosen
   response -beta/2, of a rejected one +beta/2: the sigmoid loss at margin 0), the part of
   grad_hidden / grad_weight that the dead tiles hold, against the exact gradient and against
   the documented bound (``linear_logprobs``'s docstring), at the shipped FILTER_EPS.

    python bench/linear_logprobs_live.py --out bench/results/linear_logprobs_live_cpu.md

Generated responses are cached as JSON (``--cache``, written atomically per setting), so a
rerun resumes without sampling again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from _timing import write_atomic  # bench/ is on sys.path when its scripts run

PROMPT = "Describe the scene in detail."
# Scene descriptions written for this bench (the conditional path's context, the image's role).
CONTEXTS = [
    "An astronaut in a white spacesuit stands in front of an American flag, holding a helmet.",
    "A ginger tabby cat lies on a wooden floor next to a blue woollen blanket, eyes half closed.",
    "A cup of coffee on a saucer, with a spoon and a small biscuit, sits on a marble table.",
    "A rocket stands on a launch pad at dusk, steam rising around its base, floodlights on.",
    "A brown horse grazes in a green field beside a white wooden fence under a cloudy sky.",
    "Three children build a sandcastle on a beach; a red bucket and a yellow spade lie nearby.",
    "A busy city street at night: taxis, a bus, neon shop signs and people with umbrellas.",
    "A kitchen counter with a cutting board, sliced tomatoes, a knife and a bowl of pasta.",
    "Two men play chess in a park; one of them holds a paper cup, pigeons walk by the table.",
    "A red bicycle leans against a brick wall under a window box full of flowers.",
    "A snowy mountain lake with a small wooden cabin, pine trees and a canoe on the shore.",
    "A woman reads a book on a train, a backpack on the seat beside her, fields outside.",
    "A dog catches a frisbee in mid-air in a park; a boy in a blue shirt watches.",
    "A market stall sells oranges, bananas and apples under a striped awning.",
    "A laptop, a notebook, a pen and a mug of tea on a desk beside a window with rain.",
    "A lighthouse on a rocky coast, waves breaking below, seagulls in a grey sky.",
]


@dataclass(slots=True)
class Setting:
    name: str
    temperature: float
    top_p: float


ROW_TILES = (1, 16, 64)  # row-tile heights whose live fraction is also reported (128 x 128 vocab tiles)
SETTINGS = {"t1": Setting("temperature 1, top-p 1", 1.0, 1.0),
            "t07p09": Setting("temperature 0.7, top-p 0.9", 0.7, 0.9)}


def sample_pairs(folder: Path, setting: Setting, max_new_tokens: int, seed: int) -> list[dict]:
    """One chosen (h = 0) and one rejected (h ~ N(0.5, 0.15)) response per context."""
    from judgefree.engine import Engine, Request, SamplingParams

    engine = Engine.from_pretrained(folder, dtype="float32", device="cpu", max_model_len=512)
    sampling = SamplingParams(temperature=setting.temperature, top_p=setting.top_p)
    gen = torch.Generator().manual_seed(seed)
    hs = (0.5 + 0.15 * torch.randn(len(CONTEXTS), generator=gen)).clamp(0.0, 1.0).tolist()
    requests = []
    for i, context in enumerate(CONTEXTS):
        requests.append(Request(PROMPT, context=context, h=0.0, sampling=sampling, seed=seed + 2 * i,
                                max_new_tokens=max_new_tokens))
        requests.append(Request(PROMPT, context=context, h=hs[i], sampling=sampling, seed=seed + 2 * i + 1,
                                max_new_tokens=max_new_tokens))
    done = engine.generate(requests)
    failed = [c.error for c in done if c.error is not None]
    if failed:
        raise RuntimeError(f"the engine failed {len(failed)} request(s): {failed[0]}")
    return [dict(prompt_ids=done[2 * i].prompt_token_ids,
                 chosen=dict(ids=done[2 * i].token_ids, h=done[2 * i].h, ref=done[2 * i].cond_logprobs),
                 rejected=dict(ids=done[2 * i + 1].token_ids, h=done[2 * i + 1].h, ref=done[2 * i + 1].cond_logprobs))
            for i in range(len(CONTEXTS))]


def cached_pairs(cache: Path, key: str, folder: Path, setting: Setting, max_new_tokens: int, seed: int) -> list[dict]:
    path = cache / f"pairs_{key}_n{max_new_tokens}_s{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    pairs = sample_pairs(folder, setting, max_new_tokens, seed)
    print(f"sampled {len(pairs)} pairs ({setting.name}) in {time.perf_counter() - start:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(pairs))
    return pairs


def response_rows(model, pairs: list[dict], role: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Final hidden rows [N, H] at the positions that predict ``role``'s response tokens, the
    targets [N], and the largest |teacher-forced log p - the engine's recorded log p_cond|."""
    rows, targets, drift = [], [], 0.0
    head = model.get_output_embeddings().weight.detach()
    for pair in pairs:
        prompt, response = pair["prompt_ids"], pair[role]["ids"]
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            hidden = model.model(input_ids=ids).last_hidden_state[0]
        picked = hidden[len(prompt) - 1: len(prompt) + len(response) - 1]
        tgt = torch.tensor(response)
        logp = torch.log_softmax((picked @ head.T).double(), dim=-1).gather(1, tgt[:, None])[:, 0]
        drift = max(drift, float((logp - torch.tensor(pair[role]["ref"], dtype=torch.float64)).abs().max()))
        rows.append(picked)
        targets.append(tgt)
    return torch.cat(rows), torch.cat(targets), drift


def compacted_fraction(per_row: torch.Tensor, block_n: int) -> float:
    """Blocks the packed backward runs (per vocab tile, the rows live there in dense ``block_n``-row
    blocks; one packing group, as at H = 576), over the dense tiles of the same width;
    ``per_row``: ``live_rows``' verdicts [tiles, N]."""
    packed = (per_row.sum(1, dtype=torch.int64) + block_n - 1) // block_n
    return float(packed.sum()) / (-(-per_row.shape[1] // block_n) * per_row.shape[0])


def measure(x: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, grad: torch.Tensor | None,
            eps_list: list[float], error_eps: float | None, block_n: int = 128, block_v: int = 128,
            frozen_block_v: int = 256) -> list[dict]:
    """Per threshold: live fractions at the backward's tiles; at ``error_eps`` (given ``grad``)
    also the filtered gradient's error. Logits and products in float32 (as the kernel
    accumulates), log-sum-exp and log p(target) in float64. The verdicts are ``live_tiles``' on
    what the forward would hand it (``live_rows``, reduced by ``tiles_of_rows`` as ``live_tiles``
    does); the dropped gradient is the exact d logits = g (onehot - p)
    restricted to the dead tiles."""
    from judgefree.kernels.linear_logprobs_filter import live_rows, tiles_of_rows

    n, vocab = x.shape[0], w.shape[0]
    v_blocks = -(-vocab // block_v)
    tile_max = torch.empty(v_blocks, n, dtype=torch.float64)  # fp32 maxima, widened
    lse = torch.empty(n, dtype=torch.float64)
    for r0 in range(0, n, block_n):
        logits = x[r0:r0 + block_n] @ w.T
        lse[r0:r0 + block_n] = torch.logsumexp(logits.double(), dim=1)
        padded = torch.nn.functional.pad(logits, (0, v_blocks * block_v - vocab), value=-math.inf)
        tile_max[:, r0:r0 + block_n] = padded.reshape(-1, v_blocks, block_v).amax(dim=2).T
    target_logp = (x.double() * w[targets].double()).sum(1) - lse
    valid = torch.ones(n, dtype=torch.bool)
    # per threshold, the (row, tile) verdicts once at each backward width; everything below reduces them
    per_rows = [(live_rows(tile_max, lse, target_logp, targets, valid, block_v, eps),
                 live_rows(tile_max, lse, target_logp, targets, valid, block_v, eps, frozen_block_v))
                for eps in eps_list]
    verdicts = [(tiles_of_rows(per_row, block_n), tiles_of_rows(per_row_frozen, block_n))
                for per_row, per_row_frozen in per_rows]

    summary = [dict(eps=eps, tokens=n, live=float(live.double().mean()), live_frozen=float(live_frozen.double().mean()),
                    confident=float((-torch.expm1(target_logp) < eps).double().mean()),
                    mean_p_target=float(target_logp.exp().mean()),
                    # what finer row tiles would keep (the kernel's are block_n rows; 1: per row)
                    rows_live={rows: float(tiles_of_rows(per_row, rows).double().mean()) for rows in ROW_TILES},
                    compacted=compacted_fraction(per_row, block_n),
                    pairs_frozen=float(per_row_frozen.double().mean()),
                    compacted_frozen=compacted_fraction(per_row_frozen, block_n))
               for eps, (per_row, per_row_frozen), (live, live_frozen) in zip(eps_list, per_rows, verdicts)]
    if grad is None or error_eps not in eps_list:
        return summary
    where = eps_list.index(error_eps)
    verdicts, eps_list = verdicts[where:where + 1], eps_list[where:where + 1]
    grad = grad.float()
    exact_h, exact_w = torch.zeros_like(x), torch.zeros_like(w)
    parts = [dict(h=torch.zeros_like(x), h_frozen=torch.zeros_like(x), bound_h=torch.zeros_like(x),
                  w=torch.zeros_like(w), bound_w=torch.zeros_like(w)) for _ in eps_list]
    w_max = w.abs().amax(dim=0)  # max_v |W[v, h]|
    columns = torch.arange(vocab)
    for bn, r0 in enumerate(range(0, n, block_n)):
        rows = slice(r0, r0 + block_n)
        p = torch.exp((x[rows] @ w.T).double() - lse[rows, None]).float()
        onehot = torch.zeros_like(p)
        onehot[torch.arange(p.shape[0]), targets[rows]] = 1.0
        d = grad[rows, None] * (onehot - p)
        exact_h[rows] = d @ w
        exact_w += d.T @ x[rows]
        for (live, live_frozen), part in zip(verdicts, parts):
            skipped = torch.where(live[bn][columns // block_v] == 0, d, 0.0)
            part["h"][rows] = skipped @ w
            part["h_frozen"][rows] = torch.where(live_frozen[bn][columns // frozen_block_v] == 0, d, 0.0) @ w
            part["bound_h"][rows] = skipped.abs().sum(1, keepdim=True) * w_max[None, :]
            part["w"] += skipped.T @ x[rows]
            part["bound_w"] += skipped.abs().T @ x[rows].abs()

    def rel(part: torch.Tensor, whole: torch.Tensor) -> float:
        return float(part.abs().max() / whole.abs().max())

    for part in parts:
        # float32 products: 1e-5 of slack for their rounding (the bound is a float32 sum too)
        within = bool((part["h"].abs() <= part["bound_h"] * (1 + 1e-5)).all()
                      and (part["w"].abs() <= part["bound_w"] * (1 + 1e-5)).all())
        summary[where].update(
            err_h=rel(part["h"], exact_h), bound_h=rel(part["bound_h"], exact_h),
            err_h_frozen=rel(part["h_frozen"], exact_h),
            err_w=rel(part["w"], exact_w), bound_w=rel(part["bound_w"], exact_w),
            fro_h=float(part["h"].norm() / exact_h.norm()), fro_w=float(part["w"].norm() / exact_w.norm()),
            within=within)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta (scales the gradient only)")
    parser.add_argument("--eps", nargs="+", type=float, default=None,
                        help="filter thresholds (default 2^-10, FILTER_EPS = 2^-12, 2^-14)")
    parser.add_argument("--cache", default="runs/linear_logprobs_live", help="sampled responses (JSON)")
    parser.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM

    from judgefree.assets.smollm import smollm2_path
    from judgefree.kernels.linear_logprobs import FILTER_EPS

    eps_list = args.eps or [2.0**-10, FILTER_EPS, 2.0**-14]
    load_start = os.getloadavg()
    folder = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    weight = model.get_output_embeddings().weight.detach().float()
    lines = []
    for key in args.settings:
        setting = SETTINGS[key]
        pairs = cached_pairs(Path(args.cache), key, folder, setting, args.max_new_tokens, args.seed)
        data = {role: response_rows(model, pairs, role) for role in ("chosen", "rejected")}
        hs = [p["rejected"]["h"] for p in pairs]
        lines.append(f"### {setting.name}: {len(pairs)} pairs, rejected h {min(hs):.2f}-{max(hs):.2f} "
                     f"(mean {sum(hs) / len(hs):.2f}); teacher-forced log p vs the engine's recorded log p_cond: "
                     f"max |diff| {max(d[2] for d in data.values()):.1e}")
        lines += ["", "| responses | tokens | eps | mean p(target) | rows with 1 - p < eps | live tiles 128 x 128 "
                  "(weight grad) | live tiles 128 x 256 (frozen) | dropped dX / max dX: measured, bound | "
                  "dropped dW / max dW: measured, bound | frozen dX dropped | dropped / exact, Frobenius: dX, dW |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        finer = []
        both = (torch.cat([data["chosen"][0], data["rejected"][0]]), torch.cat([data["chosen"][1], data["rejected"][1]]))
        for role, (x, targets) in (("chosen (h = 0)", data["chosen"][:2]), ("rejected (h > 0)", data["rejected"][:2]),
                                   ("DPO batch (chosen, then rejected)", both)):
            n_chosen = data["chosen"][0].shape[0]
            sign = torch.ones(x.shape[0], dtype=torch.float64)
            if role.startswith("rejected"):
                sign = -sign
            elif role.startswith("DPO"):
                sign[n_chosen:] = -1.0
            grad = -0.5 * args.beta * sign  # d loss / d log p per token, sigmoid DPO at margin 0
            errors = None if role.startswith("DPO") else grad  # the batch: verdicts only (the cost is in dW)
            for m in measure(x, weight, targets, errors, eps_list, FILTER_EPS):
                if m.get("within") is False:
                    raise AssertionError(f"{role} eps {m['eps']:g}: the dropped gradient exceeds the documented bound")
                cells = ("| | | | |" if "err_h" not in m else
                         f"| {m['err_h']:.1e}, {m['bound_h']:.1e} | {m['err_w']:.1e}, {m['bound_w']:.1e} | "
                         f"{m['err_h_frozen']:.1e} | {m['fro_h']:.1e}, {m['fro_w']:.1e} |")
                lines.append(
                    f"| {role} | {m['tokens']} | 2^{math.log2(m['eps']):.0f} | {m['mean_p_target']:.3f} | "
                    f"{m['confident']:.1%} | {m['live']:.1%} | {m['live_frozen']:.1%} " + cells)
                print(lines[-1], flush=True)
                finer.append(f"| {role} | 2^{math.log2(m['eps']):.0f} | "
                             + " | ".join(f"{m['rows_live'][r]:.1%}" for r in ROW_TILES)
                             + f" | {m['live']:.1%} | {m['compacted']:.1%} | {m['pairs_frozen']:.1%} | "
                             f"{m['compacted_frozen']:.1%} |")
        lines += ["", "The same verdicts at finer row tiles (what a smaller BLOCK_N would keep; 1 row: the "
                  "intrinsic sparsity of d logits at 128 vocabulary ids):", "",
                  "| responses | eps | " + " | ".join(f"{r} row{'s' if r > 1 else ''}" for r in ROW_TILES)
                  + " | 128 rows (tiles) | packed backward: blocks / tiles | 1 row x 256 (frozen) | "
                  "packed frozen: blocks / 128 x 256 tiles |",
                  "|---|---|" + "---|" * (len(ROW_TILES) + 4)] + finer + [""]
    head = [f"Gradient filtering on real DPO data: SmolLM2-135M-Instruct (H = 576, V = 49152), its own samples "
            f"from the engine (text-only two-path decoding), teacher-forced, round 0 (policy = reference), "
            f"DPO beta {args.beta:g}; up to {args.max_new_tokens} new tokens per response, seed {args.seed}; "
            f"CPU, torch {torch.__version__}; load average at start "
            f"{load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}",
            "", "`python bench/linear_logprobs_live.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
            "", "Live tiles: the fraction of backward tiles (128 token rows x 128 or 256 vocabulary ids) that "
            "`live_tiles` keeps; bounds: the documented per-element bound's largest value over the exact "
            "gradient's largest magnitude (every dropped element was checked to be within it).", ""]
    load_end = os.getloadavg()
    table = "\n".join(head + lines) + f"\nload average at end {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f}\n"
    print()
    print(table)
    if args.out:
        write_atomic(args.out, table)


if __name__ == "__main__":
    main()
