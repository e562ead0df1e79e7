"""Generation driver: images in chunks -> ``engine.generate_pairs`` -> pair store, resumable.

The engine derives every response's seed from (seed, image hash, role), so a response's tokens
do not depend on the chunk it was generated in; its log-probs do in their last bits (~1e-6: the
batched float32 arithmetic depends on the batch). A rerun therefore skips the images already
stored and generates the rest in the same chunks, cut from the whole image list (a resumed chunk
is the batch an uninterrupted run would send), giving the same store as one uninterrupted run;
a resume with another ``chunk_size`` than the store was started with (recorded in its manifest)
is refused. Images that cannot be used (missing, unreadable, too large, a name that is not
UTF-8, a symlink loop, not a regular file) are skipped, counted and listed with the reason (in
the manifest and the report); the run goes on. The store is locked while the driver writes it.

Under torchrun (``ranks``: ``judgefree.distributed.Ranks``) every rank runs its own engine on
its share of the chunks still to do (strided: chunk i of those goes to rank i % world), writes
its own shards and manifest part, and rank 0 folds the parts into manifest.json once all are
done. The chunks are the ones one process cuts, so the union is that process's store, and a
rerun with any number of ranks finishes only what no rank committed (docs/data_parallel.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from judgefree.store.records import PairRecord, file_sha256, record_from_pair
from judgefree.store.pair_store import PartWriter, StoreWriter, part_progress
from judgefree.generation.hdist import HDistribution
from judgefree.engine.types import SamplingParams
from judgefree.distributed import Ranks, lock_folder, strided
from judgefree.fingerprint import model_fingerprint
from judgefree.images import file_problem
from judgefree.io import IMAGE_SUFFIXES, printable_path


def _absolute(path: str | Path) -> str:
    """``path`` made absolute with its links resolved where they resolve (a symlink loop stays
    as it is: reading it fails later and lists it as skipped, instead of stopping the run)."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):  # RuntimeError: Python < 3.13 on a symlink loop
        return os.path.abspath(path)


def list_images(source: str | Path) -> list[str]:
    """Absolute image paths from a folder (its image files, sorted by name) or a list file (one
    path per line, relative to the list's folder; blank lines and ``#`` comments ignored)."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"--images: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
    elif source.is_file():
        # surrogateescape: a name that is not UTF-8 reaches generate_store, which lists it as skipped
        lines = [line.strip() for line in source.read_text(encoding="utf-8", errors="surrogateescape").splitlines()]
        paths = [source.parent / line for line in lines if line and not line.startswith("#")]
        if not paths:
            raise ValueError(f"--images: list file {source} names no images")
    else:
        raise FileNotFoundError(f"--images: no such folder or list file: {source}")
    unique = dict.fromkeys(_absolute(p) for p in paths)  # keeps order, drops repeats
    return list(unique)


@dataclass(slots=True)
class GenerationSettings:
    """What determines the pairs; a resumed run must use the same (checked via the manifest)."""

    model: str
    prompt: str
    h_chosen: str = "fixed:0"
    h_rejected: str = "gaussian:0.5,0.15"
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ValueError("prompt must not be empty")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        # Normalised spellings, so "gaussian:0.50,0.15" resumes a "gaussian:0.5,0.15" run.
        self.h_chosen = str(HDistribution.parse(self.h_chosen))
        self.h_rejected = str(HDistribution.parse(self.h_rejected))

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class GenerationReport:
    store: Path
    total_images: int
    already_stored: int
    generated: int
    skipped: list[dict[str, str]]
    seconds: float


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _readable(paths: Sequence[str], skipped: list[dict[str, str]]) -> list[tuple[str, str]]:
    """(path, sha256) for the paths that can be read; the others go to ``skipped``."""
    ok = []
    for path in paths:
        problem = file_problem(path)
        if problem is None:
            try:
                ok.append((path, file_sha256(path)))
                continue
            except OSError as err:
                problem = f"unreadable: {err.strerror or err}"
        skipped.append({"image": printable_path(path), "reason": problem})
    return ok


def generate_store(
    engine: Any,
    images: Sequence[str],
    out: str | Path,
    settings: GenerationSettings,
    *,
    chunk_size: int = 16,
    progress: bool = True,
    after_chunk: Callable[[int], None] | None = None,
    ranks: Ranks | None = None,
) -> GenerationReport:
    """Generate one pair per image into the store at ``out``, resuming what is already there.

    ``engine`` follows ``judgefree.engine.Engine.generate_pairs``; ``after_chunk(i)`` is called
    after chunk ``i`` is committed (a test hook for interruptions). ``ranks``: the job's ranks
    when several processes share the work (every rank calls this with the same arguments).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    start = time.perf_counter()
    images = list(dict.fromkeys(_absolute(p) for p in images))
    model = Path(settings.model)
    fingerprint = model_fingerprint(model) if (model / "config.json").is_file() else None
    if ranks is not None and ranks.distributed:
        return _generate_ranks(engine, images, Path(out), settings, fingerprint, chunk_size, progress,
                               after_chunk, ranks, start)
    with StoreWriter(out, stage="generated", settings=settings.to_manifest(), model=fingerprint) as writer:
        _check_chunk_size(writer, chunk_size)
        stored = writer.keys("image")
        todo = [p for p in images if p not in stored]
        skipped: list[dict[str, str]] = []  # every unstored image is retried, so the list starts afresh
        generated = tokens = 0
        bar = tqdm(total=len(images), initial=len(images) - len(todo), unit="image", desc="generate",
                   disable=not progress, dynamic_ncols=True)
        # Chunks cut from the whole list, not from what is left: a resumed chunk is the very batch
        # the uninterrupted run would have sent, so even the last bits of its log-probs agree.
        for index, whole_chunk in enumerate(_chunks(images, chunk_size)):
            chunk = [p for p in whole_chunk if p not in stored]
            if not chunk:
                continue
            records, n = _generate_chunk(engine, chunk, settings, skipped)
            tokens += n
            writer.set_skipped(skipped)
            writer.append(records)
            generated += len(records)
            bar.update(len(chunk))
            bar.set_postfix(pairs=generated, skipped=len(skipped),
                            tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.1f}")
            if after_chunk is not None:
                after_chunk(index)
        bar.close()
        writer.set_skipped(skipped)
        writer.commit()  # records the (empty) skipped list too when nothing was left to do
    return GenerationReport(
        store=Path(out), total_images=len(images), already_stored=len(images) - len(todo),
        generated=generated, skipped=skipped, seconds=time.perf_counter() - start,
    )


def _generate_chunk(engine: Any, chunk: list[str], settings: GenerationSettings,
                    skipped: list[dict[str, str]]) -> tuple[list[PairRecord], int]:
    """The records of one chunk (failures go to ``skipped``) and their number of tokens."""
    readable = _readable(chunk, skipped)
    records: list[PairRecord] = []
    tokens = 0
    if readable:
        pairs = engine.generate_pairs(
            [path for path, _ in readable], settings.prompt, h_chosen=settings.h_chosen,
            h_rejected=settings.h_rejected, sampling=settings.sampling,
            max_new_tokens=settings.max_new_tokens, seed=settings.seed,
        )
        if len(pairs) != len(readable):
            raise RuntimeError(f"engine returned {len(pairs)} pairs for {len(readable)} images")
        for (path, sha), pair in zip(readable, pairs):
            record = _record(pair, path, sha, skipped)
            if record is not None:
                records.append(record)
                tokens += len(record.chosen_token_ids) + len(record.rejected_token_ids)
    return records, tokens


def _generate_ranks(engine: Any, images: list[str], out: Path, settings: GenerationSettings,
                    fingerprint: dict[str, Any] | None, chunk_size: int, progress: bool,
                    after_chunk: Callable[[int], None] | None, ranks: Ranks, start: float) -> GenerationReport:
    lock = lock_folder(out, ranks)
    start = time.perf_counter()  # every rank is here, its engine loaded: the job's time starts
    writer: StoreWriter | None = None
    try:
        def open_store() -> list[str]:
            nonlocal writer
            # Rank 0 alone: resume checks, folding what killed ranks committed, cleaning up.
            writer = StoreWriter(out, stage="generated", settings=settings.to_manifest(), model=fingerprint,
                                 lock=lock)
            _check_chunk_size(writer, chunk_size)
            writer.commit()
            return sorted(writer.keys("image"))

        stored = set(ranks.on_main(open_store))
        chunks = _chunks(images, chunk_size)
        pending = [i for i, chunk in enumerate(chunks) if any(p not in stored for p in chunk)]
        part = writer.part(ranks.rank) if writer is not None else PartWriter(
            out, ranks.rank, _read_merged(out), lock)
        skipped: list[dict[str, str]] = []
        generated = tokens = 0
        already = sum(p in stored for p in images)
        bar = tqdm(total=len(images), initial=already, unit="image", desc="generate",
                   disable=not (progress and ranks.is_main), dynamic_ncols=True)

        def show() -> int:  # rank 0's bar: images done by every rank, from their parts
            pairs, gone, done = part_progress(out)
            bar.n = already + pairs + gone
            bar.set_postfix(pairs=pairs, skipped=gone, ranks_done=f"{done}/{ranks.world_size}")
            bar.refresh()
            return done

        for index in strided(pending, ranks.rank, ranks.world_size):
            chunk = [p for p in chunks[index] if p not in stored]
            records, n = _generate_chunk(engine, chunk, settings, skipped)
            part.append(records, skipped=skipped, chunk=index)
            generated += len(records)
            tokens += n
            if ranks.is_main and progress:
                show()
            if after_chunk is not None:
                after_chunk(index)
        part.commit(done=True)
        if ranks.is_main and progress:
            while show() < ranks.world_size:
                time.sleep(0.2)  # a few small JSON reads: cheap
        bar.close()
        ranks.barrier()  # every part is final
        ranks.on_main(lambda: writer.fold_parts(order=images))
        counts = ranks.gather(generated)
        merged = _read_merged(out)
    finally:
        lock.release()
    ranks.barrier()  # the store is free for the next stage on every rank
    return GenerationReport(
        store=out, total_images=len(images), already_stored=sum(p in stored for p in images),
        generated=sum(counts), skipped=merged.get("skipped", []), seconds=time.perf_counter() - start,
    )


def _read_merged(out: Path) -> dict[str, Any]:
    from judgefree.store.manifest import read_manifest

    return read_manifest(out)


def _check_chunk_size(writer: StoreWriter, chunk_size: int) -> None:
    """A store is continued in chunks of the size it was started with. The engine's batched
    float32 arithmetic depends on the batch: with other chunks the tokens stay the same (seeded
    per image), but log-probs move in their last bits (~1e-6), so the resumed store would not be
    the one an uninterrupted run writes."""
    stored = writer.manifest.get("chunk_size")
    if stored is not None and stored != chunk_size:
        raise ValueError(f"{writer.path} was generated with --chunk-size {stored}; resume with the same "
                         f"(now {chunk_size}: another batch changes the last bits of the log-probs), "
                         "or choose another output folder")
    writer.update(chunk_size=chunk_size)


def _record(pair: Any, path: str, sha: str, skipped: list[dict[str, str]]) -> PairRecord | None:
    """The stored form of one engine pair, or None (and an entry in ``skipped``) for a failed one."""
    error = pair.chosen.error or pair.rejected.error
    if error or "error" in (pair.chosen.finish_reason, pair.rejected.finish_reason):
        skipped.append({"image": path, "reason": f"engine error: {error or 'unknown'}"})
        return None
    try:
        return record_from_pair(pair, path, sha)
    except ValueError as err:  # an inconsistent pair costs that image, not the chunk
        skipped.append({"image": path, "reason": f"inconsistent pair from the engine: {err}"})
        return None
