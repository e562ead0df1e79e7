"""CHAIR hallucination metrics over a file of generated captions, under two protocols.

``protocol="chair"`` (default; Rohrbach et al., 2018): CHAIRs = captions naming at least one
object absent from the image / all captions; CHAIRi = hallucinated object mentions / all
object mentions (repeats count).
``protocol="halbench"`` (Object HalBench as RLHF-V scores it, the protocol of published
tables): CHAIRs = hallucinated responses / responses naming at least one COCO object;
CHAIRi = hallucinated objects / objects, each object counted once per response; responses of
at most three words name no object; Object HalBench's refined synonym table. RLHF-V finds the
objects with GPT-3.5, which cannot run offline: here CHAIR's word matching finds them (the
report says so). Both: recall = ground-truth objects a caption names / ground-truth objects
(summed over captions); a zero denominator gives 0.0. Differences from the original code:
docs/chair.md.

``drop_unfinished=True`` (off by default; no other implementation does it) scores a caption
stopped by the token limit (``finish_reason == "length"`` or ``"truncated": true``) without
its unfinished last sentence, and the report then also carries the whole-caption numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from judgefree.evaluation.caption_objects import Mention, caption_mentions, drop_incomplete_sentence
from judgefree.evaluation.coco_truth import load_ground_truth, normalize_image_id
from judgefree.evaluation.vocabulary import CocoVocabulary, load_vocabulary

PROTOCOLS = ("chair", "halbench")
HALBENCH_NOTE = ("protocol halbench: RLHF-V's Object HalBench extracts each response's objects with GPT-3.5, "
                 "which cannot run offline; objects here are found by CHAIR's word matching, so numbers follow "
                 "the published definitions but are not the published pipeline")
# RLHF-V gives responses this short no objects (its GPT extraction skips them).
HALBENCH_MIN_WORDS = 4
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
    """Corpus-level CHAIR numbers and the counts behind them (their meaning: ``protocol``)."""

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
    protocol: str = "chair"
    captions_with_objects: int = 0  # the halbench CHAIRs denominator
    unfinished_dropped: bool = False  # truncated captions scored without their unfinished sentence


@dataclass(slots=True)
class ChairReport:
    metrics: ChairMetrics
    captions: list[CaptionScore] = field(default_factory=list)
    # with drop_unfinished: the same captions scored whole, for comparison
    whole_caption_metrics: ChairMetrics | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metrics": asdict(self.metrics)}
        if self.whole_caption_metrics is not None:
            out["metrics_whole_captions"] = asdict(self.whole_caption_metrics)
        out["notes"] = list(self.notes)
        out["captions"] = [c.to_json() for c in self.captions]
        return out


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
                  truncated: bool = False, image_id: int = -1, question_id: Any = None,
                  drop_unfinished: bool | None = None) -> CaptionScore:
    """Score one caption against the image's ground-truth classes. A ``truncated`` caption
    loses its unfinished last sentence unless ``drop_unfinished`` is False (None: as
    ``truncated`` says, this function's behaviour before the option existed)."""
    drop = truncated and (drop_unfinished is None or drop_unfinished)
    scored = drop_incomplete_sentence(text) if drop else text
    mentions = caption_mentions(scored, vocabulary)
    hallucinated = [m for m in mentions if m.object not in gt_objects]
    recalled = frozenset(m.object for m in mentions if m.object in gt_objects)
    return CaptionScore(question_id, image_id, text, scored, truncated, mentions, hallucinated,
                        gt_objects, recalled)


def _once_per_response(mentions: list[Mention]) -> list[Mention]:
    """Each object (the word as matched) once: the halbench protocol's counting."""
    seen: dict[str, Mention] = {}
    for mention in mentions:
        seen.setdefault(mention.word, mention)
    return list(seen.values())


def _halbench_view(score: CaptionScore) -> CaptionScore:
    if len(score.scored_text.split()) < HALBENCH_MIN_WORDS:
        return replace(score, mentions=[], hallucinated=[], recalled=frozenset())
    mentions = _once_per_response(score.mentions)
    return replace(score, mentions=mentions, hallucinated=[m for m in mentions if m.object not in score.gt_objects])


def summarize(scores: list[CaptionScore], skipped_errors: int = 0, protocol: str = "chair") -> ChairMetrics:
    """Corpus metrics of ``scores`` under ``protocol`` ("chair" or "halbench", module doc)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if not scores:
        raise ValueError("no captions to score")
    counted = [_halbench_view(s) for s in scores] if protocol == "halbench" else scores
    hallucinated_captions = sum(1 for s in counted if s.hallucinated)
    with_objects = sum(1 for s in counted if s.mentions)
    mentions = sum(len(s.mentions) for s in counted)
    hallucinated_mentions = sum(len(s.hallucinated) for s in counted)
    gt_objects = sum(len(s.gt_objects) for s in counted)
    recalled = sum(len(s.recalled) for s in counted)
    return ChairMetrics(
        chair_s=_ratio(hallucinated_captions, with_objects if protocol == "halbench" else len(counted)),
        chair_i=_ratio(hallucinated_mentions, mentions),
        recall=_ratio(recalled, gt_objects),
        captions=len(counted),
        hallucinated_captions=hallucinated_captions,
        mentions=mentions,
        hallucinated_mentions=hallucinated_mentions,
        gt_objects=gt_objects,
        recalled_objects=recalled,
        truncated_captions=sum(1 for s in counted if s.truncated),
        skipped_errors=skipped_errors,
        protocol=protocol,
        captions_with_objects=with_objects,
        unfinished_dropped=any(s.scored_text != s.caption for s in counted),
    )


def evaluate_captions(records: list[dict[str, Any]], annotations_dir: str | Path,
                      caption_key: str | None = None, cache_path: str | Path | None = None,
                      vocabulary: CocoVocabulary | None = None, *, protocol: str = "chair",
                      drop_unfinished: bool = False) -> ChairReport:
    """CHAIR over caption records (``image_id`` + text) against a COCO annotations folder.
    Records whose generation failed (``finish_reason == "error"``) are skipped and counted.
    ``protocol`` and ``drop_unfinished``: module doc. The vocabulary defaults to the shipped
    table (refined for halbench)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    vocabulary = vocabulary or load_vocabulary(refined=protocol == "halbench")
    usable = [r for r in records if r.get("finish_reason") != "error"]
    parsed = []
    for index, record in enumerate(usable):
        if "image_id" not in record:
            raise ValueError(f"caption record {index} has no 'image_id'")
        parsed.append((normalize_image_id(record["image_id"]), caption_text(record, caption_key), record))
    truth = load_ground_truth(annotations_dir, {image_id for image_id, _, _ in parsed}, vocabulary,
                              cache_path)

    def scores(drop: bool) -> list[CaptionScore]:
        return [score_caption(text, truth[image_id], vocabulary, is_truncated(record), image_id,
                              record.get("question_id"), drop_unfinished=drop)
                for image_id, text, record in parsed]

    skipped = len(records) - len(usable)
    scored = scores(drop_unfinished)
    report = ChairReport(summarize(scored, skipped, protocol), scored)
    if drop_unfinished:
        report.whole_caption_metrics = summarize(scores(False), skipped, protocol)
    if protocol == "halbench":
        report.notes.append(HALBENCH_NOTE)
    return report


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0
