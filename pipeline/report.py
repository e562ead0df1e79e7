"""The world demo's outputs: ``rounds.json`` (per round the metrics), a plot of hallucination
per round (PNG, drawn with PIL), and an HTML page of scenes with m0's and m_last's captions,
hallucinated words marked."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from judgefree.io import write_json_atomic

SERIES = (("chair_s", "CHAIRs", (200, 40, 40)), ("chair_i", "CHAIRi", (230, 140, 20)),
          ("recall", "recall", (40, 120, 220)), ("attribute_error", "attribute errors", (130, 60, 180)))


def write_rounds(path: Path, rounds: list[dict]) -> None:
    write_json_atomic(path, {"rounds": rounds})


def plot(path: Path, rounds: list[dict], width: int = 560, height: int = 340) -> None:
    """One line per metric (0..100 %) over rounds m0, m1, ..."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 50, width - 150, 20, height - 40
    draw.rectangle((left, top, right, bottom), outline="black")
    for pct in range(0, 101, 20):
        y = bottom - (bottom - top) * pct / 100
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((8, y - 6), f"{pct}%", fill="black")
    n = len(rounds)
    xs = [left + (right - left) * (i / max(n - 1, 1)) for i in range(n)]
    for i, x in enumerate(xs):
        draw.text((x - 8, bottom + 8), f"m{rounds[i]['round']}", fill="black")
    for k, (key, label, colour) in enumerate(SERIES):
        points = [(x, bottom - (bottom - top) * r["metrics"][key]) for x, r in zip(xs, rounds)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        draw.text((right + 12, top + 18 * k), label, fill=colour)
    draw.text((left, height - 18), "held-out evaluation scenes, greedy captions, exact truth", fill="black")
    tmp = path.with_suffix(".tmp.png")
    image.save(tmp)
    tmp.replace(path)


def _marked(caption: str, hallucinated: set[str]) -> str:
    out = []
    for word in caption.split():
        bare = word.rstrip(".,")
        tail = word[len(bare):]
        marked = f"<mark>{html.escape(bare)}</mark>" if bare.lower() in hallucinated else html.escape(bare)
        out.append(marked + html.escape(tail))
    return " ".join(out)


def _png_data(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def page(path: Path, rows: list[dict], plot_png: Path, title: str, scale: int = 3) -> None:
    """``rows``: {image, truth, captions: {model: (text, hallucinated words)}} per scene."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px}td{vertical-align:top;padding:6px}"
             "mark{background:#f88}img.s{image-rendering:pixelated}</style>",
             f"<h1>{html.escape(title)}</h1><img src='{_png_data(plot_png)}'>",
             "<p>Hallucinated object words (absent from the scene's exact object list) are <mark>marked</mark>.</p>",
             "<table>"]
    for row in rows:
        truth = ", ".join(f"{o['count']} {o['colour']} {o['class']}" for o in row["truth"])
        cells = "".join(f"<b>{html.escape(m)}</b>: {_marked(t, set(h))}<br>" for m, (t, h) in row["captions"].items())
        parts.append(f"<tr><td><img class='s' width='{72 * scale}' src='{_png_data(row['image'])}'></td>"
                     f"<td><i>truth: {html.escape(truth)}</i><br>{cells}</td></tr>")
    parts.append("</table>")
    tmp = path.with_suffix(".tmp.html")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
