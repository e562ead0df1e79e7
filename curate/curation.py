"""Curation driver: score a generated store with CLIP (resumable), swap, split, keep, and write
the curated store, its summary and the histogram.

Scoring is the slow part: its results go chunk by chunk to ``OUT/scores/`` (Parquet parts and
``progress.json``, each written atomically), so a rerun scores only what is missing. A stored
score is reused only while the pair's image bytes and both texts are unchanged. The
selection that follows is cheap and global (ranks over all pairs), so it is redone in full on
every run: rerunning with another ``--keep`` re-selects without re-scoring.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from judgefree.curate.clip_score import ClipScorer, PairScore
from judgefree.curate.histogram import write_histogram
from judgefree.store.records import PairRecord
from judgefree.curate.selection import Selection, kept_ranges, select, summarize
from judgefree.store.pair_store import MANIFEST, PairStore, StoreWriter, write_atomic, write_json_atomic

SHARD_ROWS = 10_000
_SCORE_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("content", pa.string()), ("chosen_score", pa.float64()),
    ("rejected_score", pa.float64()), ("chosen_segments", pa.int32()), ("rejected_segments", pa.int32()),
])


def content_digest(record: PairRecord) -> str:
    """What a pair's scores depend on besides the CLIP settings: image bytes and both texts."""
    text = "\0".join((record.image_sha256, record.chosen_text, record.rejected_text))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ScoreLog:
    """Scores computed so far, in ``folder``: Parquet parts listed by ``progress.json``."""

    def __init__(self, folder: Path, settings: dict[str, Any]):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        progress = folder / "progress.json"
        self.state = {"settings": json.loads(json.dumps(settings)), "parts": []}
        if progress.exists():
            stored = json.loads(progress.read_text())
            if stored["settings"] != self.state["settings"]:
                raise ValueError(f"{folder} holds scores made with other settings ({stored['settings']}); "
                                 "rerun with the same CLIP settings, or choose another output folder")
            self.state = stored

    def load(self, digests: dict[str, str]) -> dict[str, PairScore]:
        """Stored scores of the pairs whose ``content_digest`` is still ``digests[pair_id]``."""
        scores = {}
        for part in self.state["parts"]:
            for row in pq.read_table(self.folder / part, schema=_SCORE_SCHEMA).to_pylist():
                if digests.get(row["pair_id"]) == row.pop("content"):
                    scores[row["pair_id"]] = PairScore(**row)
        return scores

    def append(self, scores: list[PairScore], digests: dict[str, str]) -> None:
        """Save ``scores``; ``digests`` maps each pair id to its ``content_digest``."""
        if not scores:
            return
        name = f"part-{len(self.state['parts']):05d}.parquet"
        rows = [{**{k: v for k, v in asdict(s).items() if k != "error"}, "content": digests[s.pair_id]}
                for s in scores]
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=_SCORE_SCHEMA), sink)
        write_atomic(self.folder / name, sink.getvalue().to_pybytes())
        self.state["parts"].append(name)
        write_json_atomic(self.folder / "progress.json", self.state)


@dataclass(slots=True)
class CurationReport:
    store: Path
    summary: dict[str, Any]
    histogram: Path
    skipped: list[dict[str, str]]
    newly_scored: int
    seconds: float


def open_source(pairs: str | Path, out: str | Path) -> PairStore:
    """The generated store to curate, after checking that ``out`` may receive the curated one."""
    pairs, out = Path(pairs), Path(out)
    source = PairStore(pairs)
    if source.stage != "generated":
        raise ValueError(f"--pairs {pairs} is a '{source.stage}' store; curate a generated one")
    if out.resolve() == pairs.resolve():
        raise ValueError("--out must differ from --pairs (the generated store is read, not rewritten)")
    manifest = out / MANIFEST
    if manifest.exists() and json.loads(manifest.read_text()).get("stage") != "curated":
        raise ValueError(f"--out {out} holds a store that is not a curated one; choose another folder")
    return source


def curate_store(
    pairs: str | Path,
    out: str | Path,
    scorer: ClipScorer,
    selection: Selection,
    *,
    clip_settings: dict[str, Any],
    chunk_size: int = 64,
    progress: bool = True,
    after_chunk: Callable[[int], None] | None = None,
) -> CurationReport:
    """Score, swap, split and keep the pairs of the generated store ``pairs`` into ``out``.

    ``clip_settings`` (``ClipConfig.to_manifest()``) guards resumed scoring against a change of
    model; ``after_chunk(i)`` runs after scoring chunk ``i`` is saved (a test hook).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    start = time.perf_counter()
    pairs, out = Path(pairs), Path(out)
    source = open_source(pairs, out)
    log = ScoreLog(out / "scores", {"clip": clip_settings, "generation": source.settings})
    records = list(source.records())
    digests = {r.pair_id: content_digest(r) for r in records}
    scores = log.load(digests)
    todo = [r for r in records if r.pair_id not in scores]
    failed: dict[str, str] = {}
    segments_done = 0
    bar = tqdm(total=len(records), initial=len(records) - len(todo), unit="pair", desc="clip score",
               disable=not progress, dynamic_ncols=True)
    for index in range(0, len(todo), chunk_size):
        chunk_scores = scorer.score_records(todo[index:index + chunk_size])
        log.append([s for s in chunk_scores if s.error is None], digests)
        for s in chunk_scores:
            if s.error is None:
                scores[s.pair_id] = s
                segments_done += s.chosen_segments + s.rejected_segments
            else:
                failed[s.pair_id] = s.error
        bar.update(len(chunk_scores))
        bar.set_postfix(failed=len(failed), seg_s=f"{segments_done / max(time.perf_counter() - start, 1e-9):.1f}")
        if after_chunk is not None:
            after_chunk(index // chunk_size)
    bar.close()

    scored = [_with_scores(r, scores.get(r.pair_id)) for r in records]
    selected = select(scored, selection)
    summary = summarize(selected, selection)
    skipped = [{"image": r.image, "pair_id": r.pair_id, "reason": failed[r.pair_id]}
               for r in records if r.pair_id in failed]
    writer = StoreWriter(out, stage="curated", overwrite=True, settings={
        "clip": clip_settings, "selection": asdict(selection), "source": str(pairs.resolve()),
        "generation": source.settings,
    })
    for i in range(0, len(selected), SHARD_ROWS):
        writer.append(selected[i:i + SHARD_ROWS], commit=False)
    writer.set_skipped(skipped)
    writer.update(summary=summary)
    histogram = write_histogram(out / "histogram.png", [r.score_diff for r in selected if r.score_diff is not None],
                                kept_ranges(selected, selection))
    writer.commit()
    return CurationReport(out, summary, histogram, skipped, len(todo) - len(failed), time.perf_counter() - start)


def _with_scores(record: PairRecord, score: PairScore | None) -> PairRecord:
    if score is None:
        return record
    return replace(record, chosen_score=score.chosen_score, rejected_score=score.rejected_score,
                   chosen_segments=score.chosen_segments, rejected_segments=score.rejected_segments)
