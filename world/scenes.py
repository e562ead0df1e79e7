"""Scenes with exact truth, drawn from a seed.

The cause of hallucination is built in here (docs/world.md): in the **training** distribution
each class has a partner (``PARTNERS``) that appears with it in ``cooccurrence`` of the scenes,
and each class mostly has its typical colour (``colour_prior``). A language model fitted there
learns "a circle comes with a square", the object co-occurrence that Rohrbach et al. (2018)
and LURE (Zhou et al., 2024) identify as a main cause of object hallucination. **Evaluation**
scenes draw classes and colours uniformly and independently, from a disjoint seed range.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from judgefree.world.vocabulary import CLASSES, COLOURS

CLASS_NAMES = tuple(CLASSES)
COLOUR_NAMES = tuple(COLOURS)
# Pairs of classes that co-occur in training (each class is in exactly one pair).
PARTNERS = {a: b for a, b in (("circle", "square"), ("triangle", "star"), ("cross", "heart"),
                              ("diamond", "ring"), ("arrow", "moon"), ("hexagon", "house"))}
PARTNERS.update({b: a for a, b in list(PARTNERS.items())})
# The colour each class has in most training scenes.
TYPICAL_COLOUR = dict(zip(CLASS_NAMES, ("red", "blue", "green", "yellow", "purple", "red",
                                        "orange", "green", "blue", "yellow", "purple", "orange")))
EVAL_SEED_START = 1_000_000  # training scenes use seeds below it, evaluation scenes from it on
# The CLIP's pretraining scenes ("web" data): training seeds from here on, drawn without the
# training bias. LLaVA's CLIP is pretrained on broad web data, not on the MLLM's instruction
# data; a CLIP trained on the biased scenes never has to tell partners apart (they come
# together 90% of the time) and was measured near chance at it (docs/world.md).
WEB_SEED_START = 500_000
GRID = 3  # objects sit in distinct cells of a GRID x GRID layout


@dataclass(frozen=True, slots=True)
class WorldObject:
    cls: str
    colour: str
    row: int
    col: int
    size: float  # radius as a fraction of a cell
    dx: float  # jitter inside the cell, fractions of a cell
    dy: float


@dataclass(frozen=True, slots=True)
class Scene:
    seed: int
    split: str
    background: tuple[int, int, int]
    objects: tuple[WorldObject, ...]

    @property
    def scene_id(self) -> str:
        return f"{self.split}-{self.seed}"

    def classes(self) -> frozenset[str]:
        return frozenset(o.cls for o in self.objects)

    def counts(self) -> Counter:
        return Counter(o.cls for o in self.objects)

    def colours(self) -> dict[str, str]:
        """class -> colour (all objects of one class share it)."""
        return {o.cls: o.colour for o in self.objects}

    def truth(self) -> list[dict]:
        return [{"class": c, "colour": self.colours()[c], "count": n} for c, n in sorted(self.counts().items())]


@dataclass(frozen=True, slots=True)
class Distribution:
    """How scenes are drawn. ``biased``: the training distribution (partners, colour prior)."""

    biased: bool
    cooccurrence: float = 0.9
    colour_prior: float = 0.8
    pair_count: float = 0.25  # probability that a class appears twice

    def __post_init__(self) -> None:
        for name in ("cooccurrence", "colour_prior", "pair_count"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


TRAIN = Distribution(biased=True)
EVAL = Distribution(biased=False)


def _classes(rng: np.random.Generator, dist: Distribution) -> list[str]:
    if not dist.biased:
        k = int(rng.integers(1, 4))
        return [CLASS_NAMES[i] for i in rng.choice(len(CLASS_NAMES), size=k, replace=False)]
    first = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
    chosen = [first]
    if rng.random() < dist.cooccurrence:
        chosen.append(PARTNERS[first])
    if rng.random() < (0.4 if len(chosen) == 2 else 0.5):
        others = [c for c in CLASS_NAMES if c not in chosen and PARTNERS[c] not in chosen]
        chosen.append(others[int(rng.integers(len(others)))])
    return chosen


def _colour(rng: np.random.Generator, cls: str, dist: Distribution) -> str:
    if dist.biased and rng.random() < dist.colour_prior:
        return TYPICAL_COLOUR[cls]
    return COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]


def _background(rng: np.random.Generator) -> tuple[int, int, int]:
    """A grey-ish tone, never close to an object colour (they are all saturated)."""
    base = int(rng.integers(70, 200))
    return tuple(int(np.clip(base + rng.integers(-20, 21), 0, 255)) for _ in range(3))


def make_scene(seed: int, split: str, dist: Distribution | None = None) -> Scene:
    """The scene of ``seed``: training seeds lie below EVAL_SEED_START, evaluation seeds from it."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if seed < 0 or (split == "train") != (seed < EVAL_SEED_START):
        raise ValueError(f"seed {seed} is outside the {split} range "
                         f"({'[0, %d)' % EVAL_SEED_START if split == 'train' else '>= %d' % EVAL_SEED_START})")
    dist = dist or (TRAIN if split == "train" else EVAL)
    rng = np.random.default_rng([seed, 0x5CE7E])
    classes = _classes(rng, dist)
    cells = [divmod(int(i), GRID) for i in rng.permutation(GRID * GRID)]
    objects = []
    for cls in classes:
        colour = _colour(rng, cls, dist)
        for _ in range(2 if rng.random() < dist.pair_count else 1):
            row, col = cells.pop()
            objects.append(WorldObject(cls, colour, row, col, float(rng.uniform(0.3, 0.42)),
                                       float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))))
    return Scene(seed, split, _background(rng), tuple(objects))


def web_scenes(count: int) -> list[Scene]:
    """The CLIP's ``count`` pretraining scenes: uniform classes and colours, seeds from WEB_SEED_START."""
    return scenes("train", count, start=WEB_SEED_START, dist=EVAL)


def scenes(split: str, count: int, start: int = 0, dist: Distribution | None = None) -> list[Scene]:
    """``count`` scenes of ``split``: seeds start.. (training) or EVAL_SEED_START + start.. (evaluation)."""
    base = start if split == "train" else EVAL_SEED_START + start
    return [make_scene(base + i, split, dist) for i in range(count)]
