"""Scenes as pictures (PIL): each class a distinct filled shape, at any size from ~48 px."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from judgefree.world.scenes import GRID, Scene, WorldObject
from judgefree.world.vocabulary import COLOURS

DEFAULT_SIZE = 72


def _polygon(cx, cy, r, points):
    return [(cx + r * x, cy + r * y) for x, y in points]


def _regular(n, start=-math.pi / 2, radius=1.0):
    return [(radius * math.cos(start + 2 * math.pi * i / n), radius * math.sin(start + 2 * math.pi * i / n))
            for i in range(n)]


_STAR = [p for i in range(5) for p in (_regular(5)[i], _regular(5, -math.pi / 2 + math.pi / 5, 0.42)[i])]


def _draw_mask(draw: ImageDraw.ImageDraw, cls: str, cx: float, cy: float, r: float) -> None:
    """Draw ``cls`` in white (255) on a mask; black (0) cuts holes."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if cls == "circle":
        draw.ellipse(box, fill=255)
    elif cls == "square":
        draw.rectangle((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), fill=255)
    elif cls == "triangle":
        draw.polygon(_polygon(cx, cy, r, [(0, -1), (0.95, 0.75), (-0.95, 0.75)]), fill=255)
    elif cls == "star":
        draw.polygon(_polygon(cx, cy, r, _STAR), fill=255)
    elif cls == "cross":
        w = 0.32 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    elif cls == "heart":
        q = 0.5 * r
        draw.ellipse((cx - r, cy - 0.8 * r, cx, cy + 0.2 * r), fill=255)
        draw.ellipse((cx, cy - 0.8 * r, cx + r, cy + 0.2 * r), fill=255)
        draw.polygon([(cx - 0.97 * r, cy - 0.15 * r), (cx + 0.97 * r, cy - 0.15 * r), (cx, cy + r)], fill=255)
        del q
    elif cls == "diamond":
        draw.polygon(_polygon(cx, cy, r, [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]), fill=255)
    elif cls == "ring":
        draw.ellipse(box, fill=255)
        draw.ellipse((cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r), fill=0)
    elif cls == "arrow":
        draw.polygon(_polygon(cx, cy, r, [(-1, -0.25), (0.1, -0.25), (0.1, -0.7), (1, 0), (0.1, 0.7),
                                          (0.1, 0.25), (-1, 0.25)]), fill=255)
    elif cls == "moon":
        draw.ellipse(box, fill=255)
        draw.ellipse((cx - 0.45 * r, cy - 1.05 * r, cx + 1.3 * r, cy + 0.75 * r), fill=0)
    elif cls == "hexagon":
        draw.polygon(_polygon(cx, cy, r, _regular(6, 0)), fill=255)
    elif cls == "house":
        draw.rectangle((cx - 0.7 * r, cy - 0.1 * r, cx + 0.7 * r, cy + 0.9 * r), fill=255)
        draw.polygon(_polygon(cx, cy, r, [(-0.95, -0.1), (0, -1), (0.95, -0.1)]), fill=255)
    else:
        raise ValueError(f"no drawing for class {cls!r}")


def _place(obj: WorldObject, size: int) -> tuple[float, float, float]:
    cell = size / GRID
    return (obj.col + 0.5 + obj.dx) * cell, (obj.row + 0.5 + obj.dy) * cell, obj.size * cell


def render(scene: Scene, size: int = DEFAULT_SIZE) -> Image.Image:
    """The RGB picture of ``scene`` at ``size`` x ``size`` pixels (drawn at 3x, then reduced:
    anti-aliased edges, as a camera would give)."""
    if size < 24:
        raise ValueError(f"image size must be >= 24 px, got {size}")
    big = size * 3
    image = Image.new("RGB", (big, big), scene.background)
    for obj in scene.objects:
        mask = Image.new("L", (big, big), 0)
        _draw_mask(ImageDraw.Draw(mask), obj.cls, *_place(obj, big))
        image.paste(COLOURS[obj.colour], (0, 0, big, big), mask)
    return image.resize((size, size), Image.LANCZOS)
