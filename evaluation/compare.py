"""Two models' CHAIR results side by side (e.g. the seed model against an improved one)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from judgefree.evaluation.chair import evaluate_captions
from judgefree.io import read_records

# (label, key, shown as a percentage, better when lower)
ROWS: tuple[tuple[str, str, bool, bool | None], ...] = (
    ("CHAIRs (%)", "chair_s", True, True),
    ("CHAIRi (%)", "chair_i", True, True),
    ("Recall (%)", "recall", True, False),
    ("captions", "captions", False, None),
    ("captions naming an object", "captions_with_objects", False, None),
    ("hallucinated captions", "hallucinated_captions", False, True),
    ("object mentions", "mentions", False, None),
    ("hallucinated mentions", "hallucinated_mentions", False, True),
    ("truncated captions", "truncated_captions", False, None),
)


def load_metrics(path: str | Path, annotations_dir: str | Path | None = None,
                 cache_path: str | Path | None = None, *, protocol: str = "chair",
                 drop_unfinished: bool = False) -> dict[str, Any]:
    """Metrics from a CHAIR result JSON (``eval chair --out``), or computed from a captions
    file when ``annotations_dir`` is given (with ``protocol`` and ``drop_unfinished``)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"results file not found: {file}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        data = None  # JSONL: a captions file
    if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
        return data["metrics"]
    if annotations_dir is None:
        raise ValueError(f"{file} is not a CHAIR result (no 'metrics'); to score a captions file "
                         "pass --coco-annotations DIR")
    report = evaluate_captions(read_records(file, "caption"), annotations_dir, cache_path=cache_path,
                               protocol=protocol, drop_unfinished=drop_unfinished)
    return asdict(report.metrics)


def format_comparison(names: tuple[str, str], first: dict[str, Any], second: dict[str, Any]) -> str:
    """A plain-text table: one row per metric, the two models and the change (second - first).
    Results of different protocols (or one with unfinished sentences dropped, one without)
    are not comparable: ValueError."""
    for key, default in (("protocol", "chair"), ("unfinished_dropped", False)):
        a, b = first.get(key, default), second.get(key, default)
        if a != b:
            raise ValueError(f"the two results differ in {key} ({names[0]}: {a}, {names[1]}: {b}); "
                             "score both the same way")
    header = ("metric", names[0], names[1], "change")
    rows = [header]
    for label, key, percent, lower_is_better in ROWS:
        if key not in first or key not in second:
            continue
        a, b = first[key], second[key]
        scale = 100.0 if percent else 1
        delta = (b - a) * scale
        verdict = ""
        if lower_is_better is not None and delta != 0:
            verdict = " (better)" if (delta < 0) == lower_is_better else " (worse)"
        fmt = "{:.1f}" if percent else "{:d}"
        rows.append((label, fmt.format(a * scale), fmt.format(b * scale),
                     ("{:+.1f}" if percent else "{:+d}").format(delta) + verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                       for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
