"""The CHAIR object vocabulary: the 80 MS-COCO classes, their synonyms and the multi-word
phrases that are matched before single words (Rohrbach et al., 2018).

The synonym table ships with the package (``data/chair_synonyms.txt``, BSD-2-Clause, see
``data/CHAIR_LICENSE.txt``). The phrase rules are those of the original ``chair.py``.
``load_vocabulary(refined=True)`` is the table Object HalBench (RLHF-V) uses: docs/chair.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

# Qualifiers that would otherwise fire "person": "baby bird" is a bird, "passenger jet" a jet.
_ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
                 "giraffe", "animal", "cub")
_VEHICLE_WORDS = ("jet", "train")


@dataclass(frozen=True, slots=True)
class CocoVocabulary:
    """Synonym -> COCO class, plus phrases (tuples of words) -> the word they stand for."""

    synonym_to_class: dict[str, str]
    phrases: dict[tuple[str, ...], str]
    classes: tuple[str, ...]
    # Words never singularised: every word of a synonym or phrase, so that a singulariser
    # cannot turn "bus" into "bu" or "tennis" into "tenni".
    protected_words: frozenset[str]
    longest_phrase: int

    def class_of(self, name: str) -> str | None:
        return self.synonym_to_class.get(name)


def parse_synonym_table(text: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Parse ``class, synonym, ...`` lines ('#' starts a comment) into a lower-cased
    synonym -> class map and the class list in file order."""
    synonym_to_class: dict[str, str] = {}
    classes: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        names = [" ".join(n.lower().split()) for n in line.split(",")]
        names = [n for n in names if n]
        if not names:
            raise ValueError(f"synonym table line {number} names no object")
        canonical = names[0]
        if canonical in classes:
            raise ValueError(f"synonym table line {number}: class {canonical!r} appears twice")
        classes.append(canonical)
        for name in names:
            synonym_to_class[name] = canonical
    if not classes:
        raise ValueError("synonym table is empty")
    return synonym_to_class, tuple(classes)


def build_phrases(synonym_to_class: dict[str, str]) -> dict[tuple[str, ...], str]:
    """Multi-word synonyms map to themselves; the original's special cases come on top."""
    phrases = {tuple(name.split()): name for name in synonym_to_class if " " in name}
    # Phrases of the original's double-word list that name no object: matched so that their
    # words do not fire one ("home plate" is a baseball base, "train tracks" need no train).
    phrases[("home", "plate")] = "home plate"
    phrases[("train", "track")] = "train track"
    for animal in _ANIMAL_WORDS:
        phrases[("baby", animal)] = animal
        phrases[("adult", animal)] = animal
    for vehicle in _VEHICLE_WORDS:
        phrases[("passenger", vehicle)] = vehicle
    phrases[("bow", "tie")] = "tie"
    phrases[("toilet", "seat")] = "toilet"  # a toilet seat is not a chair
    return phrases


def vocabulary_from_text(text: str) -> CocoVocabulary:
    return _vocabulary(*parse_synonym_table(text))


def with_synonyms(vocabulary: CocoVocabulary, extra: dict[str, str]) -> CocoVocabulary:
    """``vocabulary`` with more synonyms (synonym -> an existing class)."""
    unknown = sorted(cls for cls in extra.values() if cls not in vocabulary.classes)
    if unknown:
        raise ValueError(f"extra synonyms name classes the vocabulary lacks: {', '.join(unknown)}")
    merged = dict(vocabulary.synonym_to_class)
    merged.update({" ".join(name.lower().split()): cls for name, cls in extra.items()})
    return _vocabulary(merged, vocabulary.classes)


def _vocabulary(synonym_to_class: dict[str, str], classes: tuple[str, ...]) -> CocoVocabulary:
    phrases = build_phrases(synonym_to_class)
    protected = {w for name in synonym_to_class for w in name.split()}
    protected.update(w for phrase in phrases for w in phrase)
    longest = max((len(p) for p in phrases), default=1)
    return CocoVocabulary(synonym_to_class, phrases, classes, frozenset(protected), longest)


# Object HalBench's "refined" table (RLHF-V, eval/data/synonyms_refine.txt) is the CHAIR table
# with these four synonyms added; nothing else differs (compared line by line).
HALBENCH_EXTRA_SYNONYMS = {"brother": "person", "pedestrian": "person", "coffee table": "dining table",
                           "remote control": "remote"}


@lru_cache(maxsize=4)
def load_vocabulary(path: str | None = None, refined: bool = False) -> CocoVocabulary:
    """The shipped CHAIR vocabulary, or one read from ``path`` (same format); ``refined`` adds
    Object HalBench's extra synonyms."""
    if refined:
        return with_synonyms(load_vocabulary(path), HALBENCH_EXTRA_SYNONYMS)
    if path is None:
        text = resources.files("judgefree.evaluation").joinpath("data/chair_synonyms.txt").read_text(
            encoding="utf-8"
        )
    else:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"synonym table not found: {file}")
        text = file.read_text(encoding="utf-8")
    return vocabulary_from_text(text)
