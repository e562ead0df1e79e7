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
from judgefree.store.pair_store import StoreWriter
from judgefree.generation.hdist import HDistribution
from judgefree.engine.types import SamplingParams
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
) -> GenerationReport:
    """Generate one pair per image into the store at ``out``, resuming what is already there.

    ``engine`` follows ``judgefree.engine.Engine.generate_pairs``; ``after_chunk(i)`` is called
    after chunk ``i`` is committed (a test hook for interruptions).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    start = time.perf_counter()
    images = list(dict.fromkeys(_absolute(p) for p in images))
    model = Path(settings.model)
    fingerprint = model_fingerprint(model) if (model / "config.json").is_file() else None
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
            readable = _readable(chunk, skipped)
            records: list[PairRecord] = []
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
