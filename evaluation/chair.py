"""CHAIR hallucination metrics (Rohrbach et al., 2018) over a file of generated captions.

CHAIRs = captions naming at least one object absent from the image / all captions;
CHAIRi = hallucinated object mentions / all object mentions (repeats count);
recall = ground-truth objects a caption names / ground-truth objects (summed over captions).
A zero denominator gives 0.0. A caption stopped by the token limit (``finish_reason ==
"length"`` or ``"truncated": true``) loses its last, incomplete sentence before scoring.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from judgefree.evaluation.caption_objects import Mention, caption_mentions, drop_incomplete_sentence
from judgefree.evaluation.coco_truth import load_ground_truth, normalize_image_id
from judgefree.evaluation.vocabulary import CocoVocabulary, load_vocabulary

CAPTION_KEYS = ("caption", "answer", "text", "response")


@dataclass(slots=True)
class CaptionScore:
    """One caption's objects: what it names, which of those the image lacks, which it has."""

    question_id: Any
    image_id: int
    caption: str
    scored_text: str
    truncated: bool
    mentions: list[Mention]
    hallucinated: list[Mention]
    gt_objects: frozenset[str]
    recalled: frozenset[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "image_id": self.image_id,
            "caption": self.caption,
            "scored_text": self.scored_text,
            "truncated": self.truncated,
            "mentions": [[m.word, m.object] for m in self.mentions],
            "hallucinated": [[m.word, m.object] for m in self.hallucinated],
            "gt_objects": sorted(self.gt_objects),
            "recalled_objects": sorted(self.recalled),
            "chair_s": int(bool(self.hallucinated)),
            "chair_i": _ratio(len(self.hallucinated), len(self.mentions)),
            "recall": _ratio(len(self.recalled), len(self.gt_objects)),
        }


@dataclass(slots=True)
class ChairMetrics:
    """Corpus-level CHAIR numbers and the counts behind them."""

    chair_s: float
    chair_i: float
    recall: float
    captions: int
    hallucinated_captions: int
    mentions: int
    hallucinated_mentions: int
    gt_objects: int
    recalled_objects: int
    truncated_captions: int
    skipped_errors: int = 0


@dataclass(slots=True)
class ChairReport:
    metrics: ChairMetrics
    captions: list[CaptionScore] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"metrics": asdict(self.metrics), "captions": [c.to_json() for c in self.captions]}


def caption_text(record: dict[str, Any], key: str | None = None) -> str:
    """The generated text of a caption record (``key``, else the first of CAPTION_KEYS)."""
    keys = (key,) if key else CAPTION_KEYS
    for name in keys:
        if name in record:
            value = record[name]
            if not isinstance(value, str):
                raise ValueError(f"caption field {name!r} must be a string, got {type(value).__name__}")
            return value
    raise ValueError(f"caption record has none of the fields {', '.join(keys)}: keys are {sorted(record)}")


def is_truncated(record: dict[str, Any]) -> bool:
    return record.get("finish_reason") == "length" or bool(record.get("truncated", False))


def score_caption(text: str, gt_objects: frozenset[str], vocabulary: CocoVocabulary,
                  truncated: bool = False, image_id: int = -1, question_id: Any = None) -> CaptionScore:
    """Score one caption against the image's ground-truth classes."""
    scored = drop_incomplete_sentence(text) if truncated else text
    mentions = caption_mentions(scored, vocabulary)
    hallucinated = [m for m in mentions if m.object not in gt_objects]
    recalled = frozenset(m.object for m in mentions if m.object in gt_objects)
    return CaptionScore(question_id, image_id, text, scored, truncated, mentions, hallucinated,
                        gt_objects, recalled)


def summarize(scores: list[CaptionScore], skipped_errors: int = 0) -> ChairMetrics:
    if not scores:
        raise ValueError("no captions to score")
    hallucinated_captions = sum(1 for s in scores if s.hallucinated)
    mentions = sum(len(s.mentions) for s in scores)
    hallucinated_mentions = sum(len(s.hallucinated) for s in scores)
    gt_objects = sum(len(s.gt_objects) for s in scores)
    recalled = sum(len(s.recalled) for s in scores)
    return ChairMetrics(
        chair_s=hallucinated_captions / len(scores),
        chair_i=_ratio(hallucinated_mentions, mentions),
        recall=_ratio(recalled, gt_objects),
        captions=len(scores),
        hallucinated_captions=hallucinated_captions,
        mentions=mentions,
        hallucinated_mentions=hallucinated_mentions,
        gt_objects=gt_objects,
        recalled_objects=recalled,
        truncated_captions=sum(1 for s in scores if s.truncated),
        skipped_errors=skipped_errors,
    )


def evaluate_captions(records: list[dict[str, Any]], annotations_dir: str | Path,
                      caption_key: str | None = None, cache_path: str | Path | None = None,
                      vocabulary: CocoVocabulary | None = None) -> ChairReport:
    """CHAIR over caption records (``image_id`` + text) against a COCO annotations folder.
    Records whose generation failed (``finish_reason == "error"``) are skipped and counted."""
    vocabulary = vocabulary or load_vocabulary()
    usable = [r for r in records if r.get("finish_reason") != "error"]
    parsed = []
    for index, record in enumerate(usable):
        if "image_id" not in record:
            raise ValueError(f"caption record {index} has no 'image_id'")
        parsed.append((normalize_image_id(record["image_id"]), caption_text(record, caption_key), record))
    truth = load_ground_truth(annotations_dir, {image_id for image_id, _, _ in parsed}, vocabulary,
                              cache_path)
    scores = [
        score_caption(text, truth[image_id], vocabulary, is_truncated(record), image_id,
                      record.get("question_id"))
        for image_id, text, record in parsed
    ]
    return ChairReport(summarize(scores, len(records) - len(usable)), scores)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0
