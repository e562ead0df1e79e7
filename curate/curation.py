"""Curation driver: score a generated store with CLIP (resumable), swap, split, keep, and write
the curated store, its summary and the histogram.

Scoring is the slow part: its results go chunk by chunk to ``OUT/scores/`` (Parquet parts and
``progress.json``, each written atomically, each part with its size and sha256), so a rerun
scores only what is missing. A stored score is reused only while the pair's image bytes and
both texts are unchanged; a damaged part is dropped and its pairs scored again (it is a cache).
The selection that follows is cheap and global (ranks over all pairs), so it is redone in full
on every run: rerunning with another ``--keep`` re-selects without re-scoring. ``OUT`` is
locked for the whole run, and a source store that another run is still writing is refused.

Under torchrun (``ranks``) every rank scores every ``world``-th chunk of the pairs still to score
into its own score parts (``scores/progress-r<rank>.json``, ``part-r<rank>-*.parquet``; rank 0
keeps ``progress.json``); the selection, global, runs once on rank 0 over the union, which writes
the curated store. Every rank reads every rank's score parts, so a rerun with any number of
ranks scores only what none stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from judgefree.curate.selection import Selection, empty_sides, kept_ranges, select, summarize
from judgefree.distributed import Ranks, lock_folder, strided
from judgefree.errors import DamagedFile, FolderLocked
from judgefree.io import read_parquet, remove_stale_tmp, write_atomic, write_json_atomic
from judgefree.locks import FolderLock, describe_holder, holder_of
from judgefree.store.manifest import MANIFEST, load_json
from judgefree.store.pair_store import PairStore, StoreWriter

log = logging.getLogger(__name__)
SHARD_ROWS = 10_000
PROGRESS = "progress.json"
_SCORE_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("content", pa.string()), ("chosen_score", pa.float64()),
    ("rejected_score", pa.float64()), ("chosen_segments", pa.int32()), ("rejected_segments", pa.int32()),
])


def content_digest(record: PairRecord) -> str:
    """What a pair's scores depend on besides the CLIP settings: image bytes and both texts."""
    text = "\0".join((record.image_sha256, record.chosen_text, record.rejected_text))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ScoreLog:
    """Scores computed so far, in ``folder``: Parquet parts listed by ``progress.json``. The
    caller holds the lock of the folder above."""

    def __init__(self, folder: Path, settings: dict[str, Any], rank: int = 0):
        self.folder, self.rank = folder, rank
        folder.mkdir(parents=True, exist_ok=True)
        if rank == 0:  # the other ranks' temporary files may be in flight
            remove_stale_tmp(folder)
        self.progress = folder / (PROGRESS if rank == 0 else f"progress-r{rank}.json")
        self.state = {"settings": json.loads(json.dumps(settings)), "parts": [], "next_part": 0}
        self.others: list[dict[str, Any]] = []  # parts other ranks listed (read, never rewritten)
        for progress in sorted(folder.glob("progress*.json")):
            parts, next_part = self._listed(progress)
            if progress == self.progress:
                self.state.update(parts=parts, next_part=next_part)
            else:
                self.others += parts

    def _listed(self, progress: Path) -> tuple[list[dict[str, Any]], int]:
        """The parts one progress file lists (none when it is damaged: they are scored again)."""
        try:
            stored = json.loads(progress.read_text(encoding="utf-8"))
            parts = [self._entry(part) for part in stored["parts"]]
            stored_settings = stored["settings"]
        except (ValueError, KeyError, TypeError) as err:
            log.warning("%s is damaged (%s): the CLIP scores it listed are computed again", progress, err)
            return [], 0
        if stored_settings != self.state["settings"]:
            raise ValueError(f"{self.folder} holds scores made with other settings ({stored_settings}); "
                             "rerun with the same CLIP settings, or choose another output folder")
        unique = list({part["file"]: part for part in parts}.values())
        return unique, max([stored.get("next_part", 0), len(parts)])

    def rows(self) -> int:
        """Scores listed by every rank's progress file now (rank 0's bar)."""
        return sum(sum(p.get("rows", 0) for p in self._listed(f)[0]) for f in self.folder.glob("progress*.json"))

    def _entry(self, part: Any) -> dict[str, Any]:
        """A listed part, its name checked to stay in this folder; schema-1 lists bare names."""
        entry = {"file": part} if isinstance(part, str) else dict(part)
        name = entry.get("file")
        if not isinstance(name, str) or "/" in name or "\\" in name or not name.startswith("part-") \
                or not name.endswith(".parquet"):
            raise ValueError(f"part {name!r} is not a part file of this folder")
        return entry

    def load(self, digests: dict[str, str]) -> dict[str, PairScore]:
        """Stored scores of the pairs whose ``content_digest`` is still ``digests[pair_id]``."""
        scores, whole = {}, []
        own = {part["file"] for part in self.state["parts"]}
        for part in self.others + self.state["parts"]:
            table = self._read(part)
            if table is None:
                continue
            if part["file"] in own:
                whole.append(part)
            for row in table.to_pylist():
                if digests.get(row["pair_id"]) == row.pop("content"):
                    scores[row["pair_id"]] = PairScore(**row)
        self.state["parts"] = whole
        return scores

    def _read(self, part: dict[str, Any]) -> pa.Table | None:
        path = self.folder / part["file"]
        try:
            data = path.read_bytes()
            if "sha256" in part and (len(data) != part.get("bytes") or hashlib.sha256(data).hexdigest() != part["sha256"]):
                raise ValueError("size or sha256 differs from the one recorded when it was written")
            table = read_parquet(data, schema=_SCORE_SCHEMA)
            if "rows" in part and table.num_rows != part["rows"]:
                raise ValueError(f"{table.num_rows} rows, {part['rows']} recorded")
            return table
        except (OSError, ValueError, pa.ArrowException) as err:
            log.warning("CLIP score part %s is unusable (%s): its pairs are scored again", path, err)
            return None

    def append(self, scores: list[PairScore], digests: dict[str, str]) -> None:
        """Save ``scores``; ``digests`` maps each pair id to its ``content_digest``."""
        if not scores:
            return
        name = f"part-{'' if self.rank == 0 else f'r{self.rank}-'}{self.state['next_part']:05d}.parquet"
        rows = [{**{k: v for k, v in asdict(s).items() if k != "error"}, "content": digests[s.pair_id]}
                for s in scores]
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=_SCORE_SCHEMA), sink)
        data = sink.getvalue().to_pybytes()
        write_atomic(self.folder / name, data)
        self.state["next_part"] += 1
        self.state["parts"].append({"file": name, "rows": len(rows), "bytes": len(data),
                                    "sha256": hashlib.sha256(data).hexdigest()})
        write_json_atomic(self.progress, self.state)


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
    if (out / MANIFEST).exists() and load_json(out).get("stage") != "curated":
        raise ValueError(f"--out {out} holds a store that is not a curated one; choose another folder")
    writer = holder_of(pairs)
    if writer is not None:
        raise FolderLocked(f"--pairs {pairs} is still being written ({describe_holder(writer)}); "
                           "curate it once that run has finished")
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
    ranks: Ranks | None = None,
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
    ranks = ranks if ranks is not None else Ranks.single()
    lock = lock_folder(out, ranks)
    try:
        report = _curate(source, pairs, out, lock, scorer, selection, clip_settings, chunk_size, progress,
                         after_chunk, start, ranks)
    finally:
        lock.release()
    ranks.barrier()  # the curated store is free for the next stage on every rank
    return report


def _curate(source: PairStore, pairs: Path, out: Path, lock: FolderLock, scorer: ClipScorer, selection: Selection,
            clip_settings: dict[str, Any], chunk_size: int, progress: bool,
            after_chunk: Callable[[int], None] | None, start: float, ranks: Ranks) -> CurationReport:
    score_log = ScoreLog(out / "scores", {"clip": clip_settings, "generation": source.settings}, ranks.rank)
    records = list(source.records())
    repeated = len(records) - len({r.pair_id for r in records})
    if repeated:
        raise DamagedFile(f"--pairs {pairs} holds {repeated} pair ids more than once; each pair must be stored once")
    digests = {r.pair_id: content_digest(r) for r in records}
    scores = score_log.load(digests)
    todo = [r for r in records if r.pair_id not in scores]
    ranks.barrier()  # every rank has read the same scores before any rank adds to them
    failed: dict[str, str] = {}
    segments_done = 0
    initial = len(records) - len(todo)
    bar = tqdm(total=len(records), initial=initial, unit="pair", desc="clip score",
               disable=not (progress and ranks.is_main), dynamic_ncols=True)
    for index in strided(range(0, len(todo), chunk_size), ranks.rank, ranks.world_size):
        chunk_scores = scorer.score_records(todo[index:index + chunk_size])
        score_log.append([s for s in chunk_scores if s.error is None], digests)
        for s in chunk_scores:
            if s.error is None:
                scores[s.pair_id] = s
                segments_done += s.chosen_segments + s.rejected_segments
            else:
                failed[s.pair_id] = s.error
        if ranks.distributed:  # the whole job: scores every rank has saved
            bar.n = initial + score_log.rows() + len(failed)
            bar.refresh()
        else:
            bar.update(len(chunk_scores))
        bar.set_postfix(failed=len(failed), seg_s=f"{segments_done / max(time.perf_counter() - start, 1e-9):.1f}")
        if after_chunk is not None:
            after_chunk(index // chunk_size)
    bar.close()
    if ranks.distributed:
        ranks.barrier()  # every rank's scores are saved
        for other in ranks.gather(failed):
            failed.update(other)
        newly = len(todo) - len(failed)

        def select_and_write() -> tuple[dict[str, Any], list[dict[str, str]]]:
            everything = ScoreLog(out / "scores", {"clip": clip_settings, "generation": source.settings}).load(digests)
            report = _select_and_write(source, pairs, out, lock, selection, clip_settings, records, everything, failed,
                                       newly, start)
            return report.summary, report.skipped

        summary, skipped = ranks.on_main(select_and_write)
        return CurationReport(out, summary, out / "histogram.png", skipped, newly, time.perf_counter() - start)
    return _select_and_write(source, pairs, out, lock, selection, clip_settings, records, scores, failed,
                             len(todo) - len(failed), start)


def _select_and_write(source: PairStore, pairs: Path, out: Path, lock: FolderLock, selection: Selection,
                      clip_settings: dict[str, Any], records: list[PairRecord], scores: dict[str, PairScore],
                      failed: dict[str, str], newly: int, start: float) -> CurationReport:
    """The selection over every pair, once, and the curated store (rank 0 alone)."""
    scored = [_with_scores(r, scores.get(r.pair_id)) for r in records]
    selected = select(scored, selection)
    summary = summarize(selected, selection)
    skipped = []
    for r in scored:  # what no split holds, and why: a failed image, or a response with no text
        if r.pair_id in failed:
            skipped.append({"image": r.image, "pair_id": r.pair_id, "reason": failed[r.pair_id]})
        elif empty_sides(r):
            skipped.append({"image": r.image, "pair_id": r.pair_id,
                            "reason": f"{' and '.join(empty_sides(r))} response empty (no text to score): pair dropped"})
    writer = StoreWriter(out, stage="curated", overwrite=True, model=source.model, lock=lock, settings={
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
    return CurationReport(out, summary, histogram, skipped, newly, time.perf_counter() - start)


def _with_scores(record: PairRecord, score: PairScore | None) -> PairRecord:
    if score is None:
        return record
    return replace(record, chosen_score=score.chosen_score, rejected_score=score.rejected_score,
                   chosen_segments=score.chosen_segments, rejected_segments=score.rejected_segments)
