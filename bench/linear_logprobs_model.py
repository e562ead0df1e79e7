"""The kernel model's filtered fwd+bwd bounds at MEASURED live-tile fractions.

``bench/kernel_report.py`` models filtered linear_logprobs at assumed live fractions (0.25,
0.05). This renders the same model (``bench/_roofline.py``, the same sm_90a build records) at
the fractions ``bench/linear_logprobs_live.py`` measured on real data, each tiling at its own
fraction: the weight-grad backward and Cut Cross-Entropy's scheme at 128 x 128 tiles, the
frozen backward at its 128 x 256 tiles; and the packed backward (``kernels/linear_logprobs_pack.py``)
at the measured fraction of live (row, vocab tile) pairs, with its row lists' build.

    python bench/kernel_report.py --kernel _forward_kernel --kernel _backward_kernel --json > records.jsonl
    python bench/linear_logprobs_model.py --records records.jsonl --live 576:0.99:1.0:0.22 4096:0.99:1.0:0.22

``--live H:LIVE128:LIVE256[:PAIR128[:PAIR256]]``: at hidden size H, the fraction of 128 x 128
tiles and of 128 x 256 tiles that survive filtering, and of (row, 128-wide) and (row, 256-wide)
pairs live (PAIR256 defaults to min(1, 2 PAIR128), its upper bound: a 256-wide tile is live for a
row when either half is).
"""

from __future__ import annotations

import argparse
import json

import _roofline as roofline  # bench/ is on sys.path when its scripts run
from kernel_report import _find  # noqa: PLC2701  (the report's own record lookup)

from judgefree.kernels.linear_logprobs_pack import group_rows_for_l2

SHAPES = {576: dict(tokens=8192, hidden=576, vocab=49152, dtype="bfloat16"),
          4096: dict(tokens=8192, hidden=4096, vocab=32000, dtype="bfloat16")}


def bound_us(launches: list[roofline.Work], gpu: roofline.GPUModel = roofline.H100) -> float:
    """The report's bound: per launch its largest time plus its fixed launch cost, summed."""
    total = 0.0
    for work in launches:
        times = work.times(gpu)
        fixed = times.pop("launch", 0.0)
        total += max(times.values()) + fixed
    return total * 1e6


def _filtered_forward(records: list[dict], shape: dict) -> tuple[roofline.Work, roofline.Work, int]:
    """The filtered forward (it also writes the tile maxima), its verdicts' launch, its BLOCK_V."""
    rec = _find(records, "_forward_kernel", mode="filtered", **shape)
    block_v = next(c["args"]["BLOCK_V"] for c in rec["cases"] if c["shape"].get("mode") == "filtered")
    tokens, hidden, vocab = shape["tokens"], shape["hidden"], shape["vocab"]
    return (roofline.linear_logprobs_forward(rec, tokens, hidden, vocab, 2),
            roofline.linear_logprobs_verdicts(tokens, vocab, block_v), block_v)


def packed_us(records: list[dict], hidden: int, weight_grad: bool, pair_live: float) -> tuple[float, int]:
    """The packed filtered fwd+bwd's bound (us) and its backward's program count: the filtered
    forward (tile maxima), its verdicts, the row lists' build (bytes + launches and host syncs)
    and the packed backward, in row groups that keep X and dX in L2."""
    shape = SHAPES[hidden]
    tokens, vocab = shape["tokens"], shape["vocab"]
    forward, verdicts, block_v = _filtered_forward(records, shape)
    mode = "packed" if weight_grad else "packed frozen"
    rec = _find(records, "_backward_kernel", mode=mode, **shape)
    case = next(c for c in rec["cases"] if c["shape"].get("mode") == mode and c["shape"]["hidden"] == hidden)
    bwd_block_v = case["args"]["BLOCK_V"]
    group = group_rows_for_l2(tokens, hidden, 2, case["args"]["BLOCK_N"], roofline.H100.l2_bytes)
    backward = roofline.linear_logprobs_packed_backward(rec, tokens, hidden, vocab, 2, weight_grad, pair_live, group,
                                                        mode=mode)
    launches = [forward, verdicts,
                roofline.linear_logprobs_packing(tokens, vocab, bwd_block_v, pair_live), backward]
    return bound_us(launches), backward.programs


def rows(records: list[dict], hidden: int, live128: float, live256: float) -> list[tuple[str, float, float, float]]:
    """(kind, this design's bound, CCE's scheme's bound, unfiltered bound) in us."""
    shape = SHAPES[hidden]
    tokens, vocab = shape["tokens"], shape["vocab"]
    forward = roofline.linear_logprobs_forward(_find(records, "_forward_kernel", weight_grad=True, **shape),
                                               tokens, hidden, vocab, 2)
    fwd_tiles, verdicts, _ = _filtered_forward(records, shape)
    out = []
    for weight_grad in (True, False):
        mode = "filtered" if weight_grad else "filtered frozen"
        ours = _find(records, "_backward_kernel", mode=mode, **shape)
        plain = _find(records, "_backward_kernel", weight_grad=weight_grad, **shape)
        live = live128 if weight_grad else live256
        filtered = bound_us([fwd_tiles, verdicts, roofline.linear_logprobs_backward(
            ours, tokens, hidden, vocab, 2, weight_grad, live, mode=mode)])
        cce = bound_us([forward, roofline.linear_logprobs_backward(
            plain, tokens, hidden, vocab, 2, weight_grad, live128, recompute_all=True, block_v=128)])
        unfiltered = bound_us([forward, roofline.linear_logprobs_backward(plain, tokens, hidden, vocab, 2,
                                                                          weight_grad)])
        out.append(("weight grad" if weight_grad else "frozen weight", filtered, cce, unfiltered, live))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True, help="build records of a kernel_report.py --json run")
    parser.add_argument("--live", nargs="+", required=True, metavar="H:LIVE128:LIVE256")
    args = parser.parse_args(argv)
    with open(args.records) as saved:
        records = [r for r in map(json.loads, saved) if r.get("kind") == "build"]
    lines = ["| shape (bf16, N = 8192) | op | live (ours' tiles) | live (128 x 128) | verdicts in the forward (ours) "
             "| recompute all, then filter (CCE's scheme) | ratio | unfiltered (ours) |",
             "|---|---|---|---|---|---|---|---|"]
    packed = {}
    for spec in args.live:
        try:
            parts = spec.split(":")
            if not 3 <= len(parts) <= 5:
                raise ValueError
            hidden, fractions = int(parts[0]), [float(x) for x in parts[1:]]
        except ValueError:
            raise SystemExit(f"--live takes H:LIVE128:LIVE256[:PAIR128[:PAIR256]], got {spec!r}") from None
        if hidden not in SHAPES or not all(0 <= f <= 1 for f in fractions):
            raise SystemExit(f"--live: H must be one of {sorted(SHAPES)} and fractions in [0, 1], got {spec!r}")
        live128, live256 = fractions[:2]
        shape = SHAPES[hidden]
        for kind, ours, cce, unfiltered, live in rows(records, hidden, live128, live256):
            lines.append(f"| H = {hidden}, V = {shape['vocab']} | {kind} | {live:.3f} | {live128:.3f} | {ours:.0f} | "
                         f"{cce:.0f} | {cce / ours:.2f}x | {unfiltered:.0f} |")
            if len(fractions) > 2:
                pair = fractions[2] if kind == "weight grad" else (
                    fractions[3] if len(fractions) > 3 else min(1.0, 2 * fractions[2]))
                packed[hidden, kind, pair] = (*packed_us(records, hidden, kind == "weight grad", pair), cce, ours)
    print("\n".join(lines))
    if packed:
        print("\n| shape (bf16, N = 8192) | op | live (row, tile) pairs | packed backward programs | packed (ours) | "
              "tile verdicts (ours, before) | recompute all, then filter (CCE's scheme) | ratio vs CCE |")
        print("|---|---|---|---|---|---|---|---|")
        for (hidden, kind, pair), (us, programs, cce, tiles) in packed.items():
            print(f"| H = {hidden}, V = {SHAPES[hidden]['vocab']} | {kind} | {pair:.3f} | {programs} | {us:.0f} | "
                  f"{tiles:.0f} | {cce:.0f} | {cce / us:.2f}x |")


if __name__ == "__main__":
    main()
