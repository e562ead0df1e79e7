"""Hallucination against a scene's exact truth: CHAIRs, CHAIRi and recall through
``judgefree.evaluation.chair`` (the world's vocabulary and synonyms), plus attribute errors:
a colour word right before the name of an object the scene holds, naming another colour."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from judgefree.evaluation.chair import CaptionScore, score_caption, summarize
from judgefree.world.grammar import words_of
from judgefree.world.scenes import Scene
from judgefree.world.vocabulary import COLOURS, world_vocabulary


@dataclass(slots=True)
class WorldScore:
    chair: CaptionScore
    coloured: int  # colour words attached to objects the scene holds
    wrong_colour: int

    @property
    def hallucinated(self) -> int:
        return len(self.chair.hallucinated)

    @property
    def mentions(self) -> int:
        return len(self.chair.mentions)


@dataclass(slots=True)
class WorldMetrics:
    chair_s: float
    chair_i: float
    recall: float
    attribute_error: float  # wrong colours / colour words on present objects
    captions: int
    mentions: int
    hallucinated_mentions: int
    coloured_mentions: int
    wrong_colours: int
    mean_words: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=8192)  # the CLIP's training labels ask again for the grammar's few thousand sentences
def claims(text: str) -> tuple[tuple[str, str | None], ...]:
    """The (class, colour or None) pairs a text asserts: each class name it says, with the
    colour word right before it (counts and positions are not checked)."""
    vocabulary = world_vocabulary()
    words = words_of(text)
    out = []
    for i, word in enumerate(words):
        cls = vocabulary.class_of(word)
        if cls is not None:
            out.append((cls, words[i - 1] if i and words[i - 1] in COLOURS else None))
    return tuple(out)


def score(text: str, scene: Scene) -> WorldScore:
    """One caption of ``scene``."""
    chair = score_caption(text, scene.classes(), world_vocabulary(), image_id=scene.seed, question_id=scene.scene_id)
    colours = scene.colours()
    said = [(cls, colour) for cls, colour in claims(text) if colour is not None and cls in colours]
    return WorldScore(chair, len(said), sum(colour != colours[cls] for cls, colour in said))


def corpus(scores: list[WorldScore], texts: list[str] | None = None) -> WorldMetrics:
    """The corpus numbers (CHAIR protocol: repeats count, CHAIRs over all captions)."""
    m = summarize([s.chair for s in scores])
    coloured = sum(s.coloured for s in scores)
    wrong = sum(s.wrong_colour for s in scores)
    words = [len(s.chair.caption.split()) for s in scores]
    return WorldMetrics(m.chair_s, m.chair_i, m.recall, wrong / coloured if coloured else 0.0, m.captions,
                        m.mentions, m.hallucinated_mentions, coloured, wrong, sum(words) / len(words))


def evaluate(texts: list[str], scenes: list[Scene]) -> tuple[WorldMetrics, list[WorldScore]]:
    if len(texts) != len(scenes):
        raise ValueError(f"{len(texts)} captions for {len(scenes)} scenes")
    scores = [score(t, s) for t, s in zip(texts, scenes)]
    return corpus(scores), scores
