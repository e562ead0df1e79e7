"""Generate answers to an Object HalBench question file with the engine, for CHAIR scoring.

A question file is JSONL with ``image_id`` and ``question`` (``text`` / ``prompt`` also
accepted), an optional ``question_id`` (else the line number) and an optional ``image``: a
file name, a path, or the image itself in base64 (as the released Object HalBench file has
it). Without ``image`` the picture is looked up by id in the images folder under the usual
COCO names. The output JSONL is rewritten atomically after every batch; a rerun skips the
question ids it already holds, so an interrupted run resumes where it stopped (with the same
model, temperature and token limit; other settings are refused rather than mixed in).

Under torchrun (``ranks``) each rank answers every ``world``-th batch into its own part beside
the output (``NAME.rank-<r>.jsonl``); rank 0 merges the parts into the one answers file, in
question order, when all are done (and, first thing, any parts a killed run left behind).
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from judgefree.io import read_records, write_jsonl_atomic

QUESTION_KEYS = ("question", "text", "prompt")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class GenerationEngine(Protocol):
    def generate(self, requests: list) -> list: ...


@dataclass(slots=True)
class Question:
    question_id: Any
    image_id: Any
    question: str
    image: Path | bytes  # a file, or encoded image bytes from the question file


@dataclass(slots=True)
class RunSettings:
    model: str
    max_new_tokens: int = 512
    batch_size: int = 8
    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


@dataclass(slots=True)
class RunSummary:
    generated: int
    skipped: int
    failed: list[tuple[Any, str]]


def load_questions(path: str | Path, images_dir: str | Path | None) -> list[Question]:
    """Parse the question file and find every image now, before any model is loaded."""
    folder = Path(images_dir) if images_dir is not None else None
    if folder is not None and not folder.is_dir():
        raise NotADirectoryError(f"--images is not a folder: {folder}")
    questions, seen = [], set()
    for index, record in enumerate(read_records(path, "question")):
        question_id = record.get("question_id", index)
        if str(question_id) in seen:
            raise ValueError(f"question file {path}: question_id {question_id!r} appears twice")
        seen.add(str(question_id))
        text = next((record[k] for k in QUESTION_KEYS if isinstance(record.get(k), str)), None)
        if text is None:
            raise ValueError(f"question {question_id!r} has no {'/'.join(QUESTION_KEYS)} text")
        if "image_id" not in record:
            raise ValueError(f"question {question_id!r} has no 'image_id'")
        image = _find_image(record, folder, question_id)
        questions.append(Question(question_id, record["image_id"], text, image))
    if not questions:
        raise ValueError(f"question file {path} holds no questions")
    return questions


def _find_image(record: dict, folder: Path | None, question_id: Any) -> Path | bytes:
    given = record.get("image", record.get("image_path"))
    if isinstance(given, str) and given:
        if len(given) > 1024:  # far too long for a file name: the image inline, base64-encoded
            try:
                return base64.b64decode(given, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"question {question_id!r}: 'image' is neither a file name nor base64") from None
        for candidate in (folder / given if folder else None, Path(given)):
            if candidate is not None and candidate.is_file():
                return candidate
        where = f" in {folder}" if folder else ""
        raise FileNotFoundError(f"question {question_id!r}: image {given!r} not found{where}")
    if folder is None:
        raise ValueError(f"question {question_id!r}: no image in the question file; pass --images DIR")
    for name in _coco_names(record["image_id"]):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"question {question_id!r}: no image for image_id {record['image_id']!r} in {folder}")


def _coco_names(image_id: Any) -> list[str]:
    stems = [str(image_id)]
    if isinstance(image_id, int) or (isinstance(image_id, str) and image_id.isdigit()):
        number = int(image_id)
        stems += [f"{number:012d}", f"COCO_val2014_{number:012d}", f"COCO_train2014_{number:012d}"]
    return [stem + suffix for stem in stems for suffix in IMAGE_SUFFIXES] + [str(image_id)]


def _open_image(image: Path | bytes) -> Any:
    if isinstance(image, Path):
        return image
    from PIL import Image

    return Image.open(io.BytesIO(image)).convert("RGB")


# Answer fields that must match the current settings for a rerun to append to a file.
_RESUME_KEYS = ("model", "temperature", "max_new_tokens")


def rank_parts(out_path: str | Path) -> list[Path]:
    """The answers parts of the ranks of a torchrun job beside ``out_path``."""
    out = Path(out_path)
    return sorted(out.parent.glob(f"{glob_escape(out.name)}.rank-*.jsonl"))


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def pending_questions(questions: list[Question], out_path: str | Path,
                      settings: RunSettings) -> tuple[list[dict[str, Any]], list[tuple[int, Question]]]:
    """Answers already in ``out_path`` (and in parts killed ranks left beside it) and the
    (position, question) pairs still to answer. Answers made with another model, temperature or
    token limit are refused, not mixed in."""
    out = Path(out_path)
    done = read_records(out, "answers") if out.exists() else []
    seen = {str(r.get("question_id")) for r in done}
    for part in rank_parts(out):
        for record in read_records(part, "answers"):
            if str(record.get("question_id")) not in seen:
                seen.add(str(record.get("question_id")))
                done.append(record)
    for record in done:
        for key in _RESUME_KEYS:
            if record.get(key) not in (None, getattr(settings, key)):
                raise ValueError(f"{out} holds answers made with {key} {record.get(key)!r}, not "
                                 f"{getattr(settings, key)!r}: pass a new --out")
    answered = {str(r.get("question_id")) for r in done}
    todo = [(i, q) for i, q in enumerate(questions) if str(q.question_id) not in answered]
    return done, todo


def run_benchmark(engine: GenerationEngine, questions: list[Question], out_path: str | Path,
                  settings: RunSettings, progress: bool = True, ranks: Any = None) -> RunSummary:
    """Answer every question not yet in ``out_path`` (greedy when temperature is 0). ``ranks``
    (``judgefree.distributed.Ranks``): the job's ranks when several processes share the work;
    the caller holds the answers file's lock for the job."""
    from tqdm import tqdm

    from judgefree.engine.types import Request, SamplingParams

    distributed = ranks is not None and ranks.distributed
    if distributed:  # first, what the ranks of a killed run left
        ranks.on_main(lambda: merge_parts(questions, out_path, settings))
    else:
        merge_parts(questions, out_path, settings)
    done, todo = pending_questions(questions, out_path, settings)
    if distributed:
        from judgefree.distributed import strided

        ranks.barrier()  # every rank has read the same answers before any rank adds to them
        mine: list[dict[str, Any]] = []
        part = Path(out_path).with_name(f"{Path(out_path).name}.rank-{ranks.rank}.jsonl")
    sampling = SamplingParams(temperature=settings.temperature)
    failed: list[tuple[Any, str]] = []
    batches = range(0, len(todo), settings.batch_size)
    if distributed:
        batches = strided(batches, ranks.rank, ranks.world_size)
        progress = progress and ranks.is_main
    # Questions answered by the whole job (on rank 0 read from every rank's part).
    bar = tqdm(total=len(questions), initial=len(questions) - len(todo), desc="eval run", unit="question",
               disable=not progress)
    for start in batches:
        if distributed and progress:
            bar.n = len(questions) - len(todo) + sum(len(read_records(p, "answers")) for p in rank_parts(out_path))
            bar.refresh()
        batch = todo[start : start + settings.batch_size]
        requests = [
            Request(prompt=q.question, image=_open_image(q.image), sampling=sampling,
                    max_new_tokens=settings.max_new_tokens, seed=settings.seed + index,
                    request_id=str(q.question_id))
            for index, q in batch
        ]
        completions = engine.generate(requests)
        if len(completions) != len(requests):
            raise RuntimeError(f"engine returned {len(completions)} completions for {len(requests)} requests")
        for (_, question), completion in zip(batch, completions):
            if completion.request_id not in (None, "", str(question.question_id)):
                raise RuntimeError(f"engine answered request {completion.request_id!r} in the place of "
                                   f"{question.question_id!r}: completions must keep the requests' order")
            if completion.finish_reason == "error":
                failed.append((question.question_id, completion.error or "unknown error"))
                continue  # not written: a rerun tries it again
            (mine if distributed else done).append(_answer_record(question, completion, settings))
        if distributed:
            write_jsonl_atomic(part, mine)
        else:
            write_jsonl_atomic(out_path, done)
            bar.update(len(batch))
    bar.close()
    if distributed:
        ranks.barrier()  # every part is final
        failed = [item for rank_failed in ranks.gather(failed) for item in rank_failed]
        ranks.on_main(lambda: merge_parts(questions, out_path, settings))
    return RunSummary(len(todo) - len(failed), len(questions) - len(todo), failed)


def merge_parts(questions: list[Question], out_path: str | Path, settings: RunSettings) -> int:
    """Fold the ranks' parts into ``out_path`` (question order, answers of unknown ids last), then
    delete them; returns the number of answers. The file is written before any part goes, so a
    kill in between leaves answers in both, which ``pending_questions`` reads once."""
    parts = rank_parts(out_path)
    if not parts:
        return 0
    done, _ = pending_questions(questions, out_path, settings)
    position = {str(q.question_id): i for i, q in enumerate(questions)}
    done.sort(key=lambda r: position.get(str(r.get("question_id")), len(position)))
    write_jsonl_atomic(out_path, done)
    for part in parts:
        part.unlink()
    return len(done)


def _answer_record(question: Question, completion: Any, settings: RunSettings) -> dict[str, Any]:
    return {
        "question_id": question.question_id,
        "image_id": question.image_id,
        "question": question.question,
        "caption": completion.text,
        "finish_reason": completion.finish_reason,
        "truncated": completion.finish_reason == "length",
        "num_tokens": len(completion.token_ids),
        "model": settings.model,
        "temperature": settings.temperature,
        "max_new_tokens": settings.max_new_tokens,
    }


def load_engine(model: str | Path, dtype: str = "auto", device: str | None = None) -> GenerationEngine:
    """The real engine (imported here: it pulls in torch and the model code)."""
    folder = Path(model)
    if not folder.is_dir():
        raise FileNotFoundError(f"--model folder not found: {folder}")
    from judgefree.engine import Engine

    return Engine.from_pretrained(str(folder), dtype=dtype, device=device)
