"""The kernel model's filtered fwd+bwd bounds at MEASURED live-tile fractions.

``bench/kernel_report.py`` models filtered linear_logprobs at assumed live fractions (0.25,
0.05). This renders the same model (``bench/_roofline.py``, the same sm_90a build records) at
the fractions ``bench/linear_logprobs_live.py`` measured on real data, each tiling at its own
fraction: the weight-grad backward and Cut Cross-Entropy's scheme at 128 x 128 tiles, the
frozen backward at its 128 x 256 tiles.

    python bench/kernel_report.py --kernel _forward_kernel --kernel _backward_kernel --json > records.jsonl
    python bench/linear_logprobs_model.py --records records.jsonl --live 576:0.99:1.0 4096:0.99:1.0

``--live H:LIVE128:LIVE256``: at hidden size H, the fraction of 128 x 128 tiles and of
128 x 256 tiles that survive filtering.
"""

from __future__ import annotations

import argparse
import json

import _roofline as roofline  # bench/ is on sys.path when its scripts run
from kernel_report import _find  # noqa: PLC2701  (the report's own record lookup)

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


def rows(records: list[dict], hidden: int, live128: float, live256: float) -> list[tuple[str, float, float, float]]:
    """(kind, this design's bound, CCE's scheme's bound, unfiltered bound) in us."""
    shape = SHAPES[hidden]
    tokens, vocab = shape["tokens"], shape["vocab"]
    forward = roofline.linear_logprobs_forward(_find(records, "_forward_kernel", weight_grad=True, **shape),
                                               tokens, hidden, vocab, 2)
    fwd_rec = _find(records, "_forward_kernel", mode="filtered", **shape)
    fwd_tiles = roofline.linear_logprobs_forward(fwd_rec, tokens, hidden, vocab, 2)
    block_v = next(c["args"]["BLOCK_V"] for c in fwd_rec["cases"] if c["shape"].get("mode") == "filtered")
    verdicts = roofline.linear_logprobs_verdicts(tokens, vocab, block_v)
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
    for spec in args.live:
        try:
            hidden, live128, live256 = spec.split(":")
            hidden, live128, live256 = int(hidden), float(live128), float(live256)
        except ValueError:
            raise SystemExit(f"--live takes H:LIVE128:LIVE256, got {spec!r}") from None
        if hidden not in SHAPES or not (0 <= live128 <= 1 and 0 <= live256 <= 1):
            raise SystemExit(f"--live: H must be one of {sorted(SHAPES)} and fractions in [0, 1], got {spec!r}")
        shape = SHAPES[hidden]
        for kind, ours, cce, unfiltered, live in rows(records, hidden, live128, live256):
            lines.append(f"| H = {hidden}, V = {shape['vocab']} | {kind} | {live:.3f} | {live128:.3f} | {ours:.0f} | "
                         f"{cce:.0f} | {cce / ours:.2f}x | {unfiltered:.0f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
