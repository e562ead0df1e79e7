"""Captions of a scene from a small grammar: several sentence forms, counts, colours, positions,
relations, plurals and synonyms, two to four sentences per caption. Every word any caption can
use is in ``WORDS`` (the world tokenizer's vocabulary)."""

from __future__ import annotations

import re

import numpy as np

from judgefree.world.scenes import Scene, WorldObject
from judgefree.world.vocabulary import CLASSES, COLOURS, NUMBERS, plural

# {obj} is "a red circle" / "two blue squares" (colour sometimes left out)
SINGLE_FORMS = ("there is {obj} .", "i can see {obj} .", "the image shows {obj} .", "this picture has {obj} .",
                "{obj} is in the {place} .", "we see {obj} in the {place} .")
PLURAL_FORMS = ("there are {obj} .", "i can see {obj} .", "the image shows {obj} .", "this picture has {obj} .")
PAIR_FORMS = ("this picture has {a} and {b} .", "the image shows {a} and {b} .", "i can see {a} and {b} .")
RELATION_FORMS = ("the {a} is to the {side} of the {b} .", "the {a} is {vertical} the {b} .")
PLACES = {(0, 0): "top left", (0, 1): "top", (0, 2): "top right", (1, 0): "left", (1, 1): "middle",
          (1, 2): "right", (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right"}
OPENERS = ("", "in this image , ", "here , ")
EXTRA_WORDS = ("user", "assistant", ":", "describe", "this", "image", ".", ",", "left", "right", "above",
               "below", "a", "an")
PROMPT = "describe this image ."


def _name(rng: np.random.Generator, cls: str) -> str:
    names = CLASSES[cls]
    return names[0] if rng.random() < 0.7 else names[int(rng.integers(len(names)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(rng: np.random.Generator, cls: str, colour: str, count: int, force_colour: bool = False) -> str:
    name = _name(rng, cls)
    with_colour = rng.random() < 0.85 or force_colour
    if count == 1:
        head = f"{colour} {name}" if with_colour else name
        return f"{_article(head)} {head}"
    return f"{NUMBERS[count]} {colour} {plural(name)}" if with_colour else f"{NUMBERS[count]} {plural(name)}"


def _group_sentence(rng: np.random.Generator, cls: str, colour: str, objs: list[WorldObject],
                    force_colour: bool = False) -> str:
    phrase = _phrase(rng, cls, colour, len(objs), force_colour)
    if len(objs) > 1:
        return PLURAL_FORMS[int(rng.integers(len(PLURAL_FORMS)))].format(obj=phrase)
    form = SINGLE_FORMS[int(rng.integers(len(SINGLE_FORMS)))]
    return form.format(obj=phrase, place=PLACES[(objs[0].row, objs[0].col)])


def _relation(rng: np.random.Generator, a: WorldObject, b: WorldObject) -> str | None:
    if a.col != b.col and (a.row == b.row or rng.random() < 0.5):
        return RELATION_FORMS[0].format(a=_name(rng, a.cls), b=_name(rng, b.cls),
                                        side="left" if a.col < b.col else "right")
    if a.row != b.row:
        return RELATION_FORMS[1].format(a=_name(rng, a.cls), b=_name(rng, b.cls),
                                        vertical="above" if a.row < b.row else "below")
    return None


def caption(scene: Scene, seed: int = 0) -> str:
    """One caption of ``scene`` (a different one per ``seed``), naming every object it holds."""
    rng = np.random.default_rng([scene.seed, seed, 0xCA9])
    groups: dict[str, list[WorldObject]] = {}
    for obj in scene.objects:
        groups.setdefault(obj.cls, []).append(obj)
    order = [list(groups)[int(i)] for i in rng.permutation(len(groups))]
    sentences = []
    if len(order) >= 2 and rng.random() < 0.4:  # two groups in one sentence
        a, b = order[:2]
        sentences.append(PAIR_FORMS[int(rng.integers(len(PAIR_FORMS)))].format(
            a=_phrase(rng, a, groups[a][0].colour, len(groups[a])),
            b=_phrase(rng, b, groups[b][0].colour, len(groups[b]))))
        order = order[2:]
    sentences += [_group_sentence(rng, c, groups[c][0].colour, groups[c]) for c in order]
    singles = [g[0] for g in groups.values() if len(g) == 1]
    if len(singles) >= 2 and rng.random() < 0.5:
        relation = _relation(rng, singles[0], singles[1])
        if relation:
            sentences.append(relation)
    sentences[0] = OPENERS[int(rng.integers(len(OPENERS)))] + sentences[0]
    return " ".join(sentences)


def _template_words() -> set[str]:
    texts = [*SINGLE_FORMS, *PLURAL_FORMS, *PAIR_FORMS, *RELATION_FORMS, *PLACES.values(), *OPENERS,
             *EXTRA_WORDS, *COLOURS, *NUMBERS.values()]
    texts += [n for names in CLASSES.values() for n in names] + [plural(n) for names in CLASSES.values() for n in names]
    return {w for t in texts for w in re.sub(r"\{\w+\}", " ", t).split()}


WORDS: tuple[str, ...] = tuple(sorted(_template_words()))


def words_of(text: str) -> list[str]:
    """A caption's words and punctuation as the world tokenizer splits them."""
    return re.findall(r"\w+|[^\w\s]", text.lower())
