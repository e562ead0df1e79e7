"""Generation driver: images in chunks -> ``engine.generate_pairs`` -> pair store, resumable.

The engine derives every response's seed from (seed, image hash, role), so a pair does not
depend on which chunk it was generated in; a rerun skips images already stored and generates
the rest, giving the same store as one uninterrupted run. Missing or unreadable images are
skipped, counted and listed (in the manifest and the report); the run goes on.
"""

from __future__ import annotations

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
from judgefree.io import IMAGE_SUFFIXES



def list_images(source: str | Path) -> list[str]:
    """Absolute image paths from a folder (its image files, sorted by name) or a list file (one
    path per line, relative to the list's folder; blank lines and ``#`` comments ignored)."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"--images: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
    elif source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines()]
        paths = [source.parent / line for line in lines if line and not line.startswith("#")]
        if not paths:
            raise ValueError(f"--images: list file {source} names no images")
    else:
        raise FileNotFoundError(f"--images: no such folder or list file: {source}")
    unique = dict.fromkeys(str(p.resolve()) for p in paths)  # keeps order, drops repeats
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
        try:
            ok.append((path, file_sha256(path)))
        except OSError as err:
            reason = "file not found" if isinstance(err, FileNotFoundError) else f"unreadable: {err}"
            skipped.append({"image": path, "reason": reason})
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
    images = list(dict.fromkeys(str(Path(p).resolve()) for p in images))
    writer = StoreWriter(out, stage="generated", settings=settings.to_manifest())
    stored = writer.keys("image")
    todo = [p for p in images if p not in stored]
    skipped: list[dict[str, str]] = []  # every unstored image is retried, so the list starts afresh
    generated = tokens = 0
    bar = tqdm(total=len(images), initial=len(images) - len(todo), unit="image", desc="generate",
               disable=not progress, dynamic_ncols=True)
    for index, chunk in enumerate(_chunks(todo, chunk_size)):
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
                error = pair.chosen.error or pair.rejected.error
                if error or "error" in (pair.chosen.finish_reason, pair.rejected.finish_reason):
                    skipped.append({"image": path, "reason": f"engine error: {error or 'unknown'}"})
                    continue
                records.append(record_from_pair(pair, path, sha))
                tokens += len(pair.chosen.token_ids) + len(pair.rejected.token_ids)
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
