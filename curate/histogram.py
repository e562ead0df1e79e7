"""Histogram PNG of the score differences with the kept range(s) shaded, drawn with PIL
(a plotting library would be a heavy dependency for one figure)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from judgefree.store.pair_store import write_atomic

WIDTH, HEIGHT = 900, 520
LEFT, RIGHT, TOP, BOTTOM = 80, 30, 50, 70
BAR, KEPT_BAR, KEPT_SHADE, AXIS = (120, 120, 120), (34, 139, 34), (210, 240, 210), (0, 0, 0)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_histogram(diffs: list[float], kept: list[tuple[float, float]], *, bins: int = 40,
                     title: str = "CLIP score difference (chosen - rejected)") -> Image.Image:
    """A bar chart of ``diffs`` in ``bins`` bins; bins inside a ``kept`` interval drawn green."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(18), _font(13)
    draw.text((LEFT, 14), title, fill=AXIS, font=font)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    values = np.asarray(diffs, dtype=np.float64)
    if values.size == 0:
        draw.text((LEFT, HEIGHT // 2), "no scored pairs", fill=AXIS, font=font)
        return image
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    top = max(int(counts.max()), 1)

    def x_of(value: float) -> float:
        return x0 + (value - lo) / (hi - lo) * (x1 - x0)

    for k_lo, k_hi in kept:  # shade first so bars draw on top
        a, b = max(x_of(k_lo), x0), min(x_of(k_hi), x1)
        if b >= a:
            draw.rectangle([a, y1, max(b, a + 1), y0], fill=KEPT_SHADE)
    for count, left, right in zip(counts, edges[:-1], edges[1:]):
        if count == 0:
            continue
        centre = (left + right) / 2
        inside = any(k_lo <= centre <= k_hi for k_lo, k_hi in kept)
        height = count / top * (y0 - y1)
        draw.rectangle([x_of(left) + 1, y0 - height, x_of(right) - 1, y0], fill=KEPT_BAR if inside else BAR)
    draw.line([x0, y0, x1, y0], fill=AXIS, width=2)
    draw.line([x0, y0, x0, y1], fill=AXIS, width=2)
    for value in np.linspace(lo, hi, 6):
        x = x_of(float(value))
        draw.line([x, y0, x, y0 + 6], fill=AXIS)
        draw.text((x - 20, y0 + 10), f"{value:.3g}", fill=AXIS, font=small)
    for count in np.linspace(0, top, 5):
        y = y0 - count / top * (y0 - y1)
        draw.line([x0 - 6, y, x0, y], fill=AXIS)
        draw.text((8, y - 8), f"{count:.0f}", fill=AXIS, font=small)
    draw.text((x0, HEIGHT - 28), f"{values.size} pairs; green: kept", fill=AXIS, font=small)
    return image


def write_histogram(path: str | Path, diffs: list[float], kept: list[tuple[float, float]], **kwargs) -> Path:
    """Render and write the PNG atomically; returns the path."""
    buffer = io.BytesIO()
    render_histogram(diffs, kept, **kwargs).save(buffer, format="PNG")
    write_atomic(Path(path), buffer.getvalue())
    return Path(path)
