"""The paper's ablations in miniature on the world (docs/world.md), mean and spread over seeds
(the generation and DPO seed; m0 and the evaluation scenes are the same world's).

  pairs      h-ratio pairs (h_rejected fixed 0.5) + DPO, CLIP ignored        (paper's row 1)
  drop       + CLIP verification: pairs whose chosen scores lower are dropped (row 2)
  swap       + swapping them instead                                          (row 3)
  gaussian   + Gaussian h_rejected (0.5, 0.15) instead of fixed: the full method (row 4, the demo)
  split-K    the full method, DPO on split K only of --splits sorted by CLIP difference

    python bench/world_ablation.py --seeds 0 1 2 --out bench/results/world_ablation
writes OUT/table.md and OUT/results.json (incrementally: a rerun skips finished runs); each
run's folder (models, pairs, pages) goes under --runs (default runs/world_ablation, ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import replace
from pathlib import Path


def variants(splits: int) -> dict:
    from judgefree.pipeline.demo import DemoSettings

    full = DemoSettings(splits=splits)
    fixed = replace(full, h_rejected="fixed:0.5")
    out = {"pairs": replace(fixed, on_disagreement="ignore"), "drop": replace(fixed, on_disagreement="drop"),
           "swap": fixed, "gaussian": full}
    out.update({f"split-{k}": replace(full, keep=(k,)) for k in range(splits)})
    return out


def spread(values: list[float], scale: float = 100.0) -> str:
    """mean [min, max] of ``values`` (in points when scale is 100)."""
    values = [v * scale for v in values]
    return f"{statistics.mean(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


def table(results: dict, splits: int) -> str:
    rows = ["| variant | seeds | CHAIRi m0 | CHAIRi m1 | CHAIRi m1 - m0 | CHAIRs m1 | recall m1 | attr. err. m1 "
            "| kept | kept right | CLIP right | h order right |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in variants(splits):
        runs = [v for k, v in results.items() if k.startswith(name + "/")]
        if not runs:
            continue
        m0, m1 = [r["m0"] for r in runs], [r["m1"] for r in runs]
        verdicts = [r["verdicts"] for r in runs]
        rows.append(" | ".join([
            f"| {name}", str(len(runs)), spread([m["chair_i"] for m in m0]), spread([m["chair_i"] for m in m1]),
            spread([b["chair_i"] - a["chair_i"] for a, b in zip(m0, m1)]), spread([m["chair_s"] for m in m1]),
            spread([m["recall"] for m in m1]), spread([m["attribute_error"] for m in m1]),
            f"{statistics.mean(v['kept'] for v in verdicts):.0f}",
            spread([v["kept_accuracy"] or 0.0 for v in verdicts]),
            spread([v["clip_accuracy"] or 0.0 for v in verdicts]),
            spread([v["h_order_accuracy"] or 0.0 for v in verdicts]) + " |"]))
    return "\n".join(rows)


def main() -> None:
    from judgefree.io import write_json_atomic
    from judgefree.pipeline.demo import run_world_demo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument("--out", default="bench/results/world_ablation")
    parser.add_argument("--runs", default="runs/world_ablation", help="folder of the runs themselves")
    args = parser.parse_args()
    unknown = set(args.only or ()) - set(variants(args.splits))
    if unknown:
        parser.error(f"--only: unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(variants(args.splits))}")
    out = Path(args.out)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    load_before = os.getloadavg()
    # seeds outermost: every variant gets seed 0 before any gets seed 1 (a cut-short run is still balanced)
    for seed in args.seeds:
        for name, settings in variants(args.splits).items():
            if args.only and name not in args.only:
                continue
            key = f"{name}/seed-{seed}"
            if key in results:
                continue
            summary = run_world_demo(Path(args.runs) / name / f"seed-{seed}", replace(settings, seed=seed),
                                     progress=False)
            m0, m1 = (summary["rounds"][i]["metrics"] for i in (0, 1))
            results[key] = {"m0": m0, "m1": m1, "verdicts": summary["rounds"][1].get("verdicts"),
                            "seconds": summary["seconds"], "world": summary["world"]}
            write_json_atomic(results_path, results)
    load = os.getloadavg()
    text = (table(results, args.splits) + "\n\nCHAIRi, CHAIRs, recall, attribute errors and the verdicts' accuracies "
            "in %: mean [min, max] over seeds. kept right: of the kept pairs whose two responses differ in truth "
            "cost, how often the chosen one is truly better.\n"
            f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
            f"after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
