"""The world's object classes, colours and the words that name them.

Every class has a canonical name (the CHAIR class), synonyms and a plural per name; the
synonym table is written in the CHAIR format so that ``judgefree.evaluation`` scores world
captions with its own machinery.
"""

from __future__ import annotations

from functools import lru_cache

# class -> synonyms (the first name is the class)
CLASSES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "cross": ("cross", "plus"),
    "heart": ("heart",),
    "diamond": ("diamond", "rhombus"),
    "ring": ("ring", "hoop"),
    "arrow": ("arrow",),
    "moon": ("moon", "crescent"),
    "hexagon": ("hexagon",),
    "house": ("house", "hut"),
}
PLURALS = {"box": "boxes", "cross": "crosses", "plus": "pluses", "rhombus": "rhombuses"}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (40, 70, 230),
    "yellow": (240, 220, 20), "purple": (150, 40, 190), "orange": (250, 140, 10),
}
NUMBERS = {1: "one", 2: "two", 3: "three"}


def plural(name: str) -> str:
    return PLURALS.get(name, name + "s")


def synonym_table() -> str:
    """The classes as a CHAIR synonym table (``class, synonym, ...`` per line)."""
    return "\n".join(", ".join(names) for names in CLASSES.values()) + "\n"


@lru_cache(maxsize=1)
def world_vocabulary():
    """The world's CocoVocabulary (judgefree.evaluation's type), plurals included as synonyms
    so that no singulariser is needed to find them."""
    from judgefree.evaluation.vocabulary import vocabulary_from_text, with_synonyms

    base = vocabulary_from_text(synonym_table())
    extra = {plural(n): cls for cls, names in CLASSES.items() for n in names}
    return with_synonyms(base, extra)


def colour_of_word(word: str) -> str | None:
    return word if word in COLOURS else None
