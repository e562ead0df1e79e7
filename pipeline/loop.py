"""The self-improvement loop: per round generate -> curate -> train (-> evaluate).

    OUT/loop.json                settings (a rerun must repeat them; --rounds may grow)
    OUT/round-0/eval/            the seed model's evaluation (only with evaluation inputs)
    OUT/round-K/pairs/           generated pair store        + round-K/generate.done
    OUT/round-K/curated/         curated pair store          + round-K/curate.done
    OUT/round-K/train/model/     the improved model m_K      + round-K/train.done
    OUT/round-K/eval/            CHAIR of m_K                + round-K/evaluate.done

Round K generates with m_{K-1} (m_0 = --model). Each stage resumes its own partial output
and is skipped once its marker (written last, atomically) exists. Evaluation may be added on
a rerun; an evaluation marker written with other evaluation settings is refused. Under
torchrun every rank works in every stage (each generates, scores and answers its share;
docs/data_parallel.md) and all ranks train; rank 0 writes the markers.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from judgefree.curate.clip_score import ClipConfig
from judgefree.generation.driver import GenerationSettings
from judgefree.curate.selection import Selection
from judgefree.io import remove_stale_tmp, write_json_atomic
from judgefree.distributed import Ranks, lock_folder, rank_info
from judgefree.train.config import TrainConfig

STAGES = ("generate", "curate", "train", "evaluate")
# What a round's curate.done keeps of the curation summary; "unscored" and "empty_response"
# (of the unscored, the pairs dropped for an empty response) say how many pairs were dropped.
CURATE_KEYS = ("pairs", "scored", "unscored", "empty_response", "swapped", "swap_rate", "kept")
# Settings a rerun may change: more rounds, evaluation added later, where it runs.
_FREE = frozenset({"rounds", "evaluation", "device", "progress"})


@dataclass(slots=True)
class EvalSettings:
    """Object HalBench-style questions answered by each model, scored with CHAIR."""

    questions: str
    coco_annotations: str
    images: str | None = None
    max_new_tokens: int = 512
    batch_size: int = 8


@dataclass(slots=True)
class LoopSettings:
    model: str
    images: list[str]
    out: str
    rounds: int = 1
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(model="", prompt="Describe this image in detail."))
    chunk_size: int = 16
    clip: ClipConfig = field(default_factory=ClipConfig)
    selection: Selection = field(default_factory=Selection)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalSettings | None = None
    dtype: str = "auto"  # the engine's dtype while generating and evaluating
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not self.images:
            raise ValueError("images: no image to generate from")
        self.train = replace(self.train, merge_lora=True)  # the next round's engine needs a full checkpoint

    def to_manifest(self) -> dict[str, Any]:
        data = {"model": str(Path(self.model).resolve()), "images": list(self.images), "rounds": self.rounds,
                "generation": {**self.generation.to_manifest(), "model": None}, "chunk_size": self.chunk_size,
                "clip": self.clip.to_manifest(), "selection": asdict(self.selection),
                "train": self.train.to_manifest(), "dtype": self.dtype, "device": self.device,
                "evaluation": asdict(self.evaluation) if self.evaluation else None}
        return json.loads(json.dumps(data))


@dataclass(slots=True)
class RoundReport:
    round: int
    model_in: str
    model_out: str
    stages: dict[str, dict[str, Any]]  # stage -> its marker (summary); "skipped": true when already done


class Loop:
    """Runs the rounds of ``settings``; ``log`` receives one line per stage event."""

    def __init__(self, settings: LoopSettings, log: Callable[[str], None] = print) -> None:
        self.s, self.log = settings, log
        self.out = Path(settings.out)
        self.rank = rank_info()
        self.ranks = Ranks.single()  # the job's ranks once run() starts

    # -- bookkeeping ------------------------------------------------------------------------
    def check_settings(self) -> None:
        path = self.out / "loop.json"
        wanted = self.s.to_manifest()
        if path.is_file():
            stored = json.loads(path.read_text())
            differing = sorted(k for k in (set(stored) | set(wanted)) - _FREE if stored.get(k) != wanted.get(k))
            if differing:
                raise ValueError(f"{self.out} holds a loop run with other settings ({', '.join(differing)}); "
                                 "rerun with the same settings to resume, or choose another --out")
        if self.rank.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, wanted)

    def round_dir(self, k: int) -> Path:
        return self.out / f"round-{k}"

    def model_for(self, k: int) -> str:
        """m_{k-1}: the model round k starts from."""
        return str(Path(self.s.model).resolve()) if k == 1 else str(self.round_dir(k - 1) / "train" / "model")

    def _stage(self, k: int, name: str, work: Callable[[], dict[str, Any]], *, all_ranks: bool = False,
               settings: dict[str, Any] | None = None) -> dict:
        """Run ``work`` unless its marker exists. ``settings`` (for a stage whose settings may
        change between reruns, i.e. evaluation) are stored in the marker; a marker written
        with other settings is refused rather than reused."""
        marker = self.round_dir(k) / f"{name}.done"
        if marker.is_file():
            done = json.loads(marker.read_text())
            if settings is not None and done.get("settings") != settings:
                raise ValueError(f"round {k}: {name} was done with other settings ({marker}); rerun with the "
                                 f"same ones, or delete {marker} and its output to redo it")
            self.log(f"round {k}: {name} already done, skipped ({marker})")
            return {**done, "skipped": True}
        if not all_ranks and not self.rank.is_main and not self.ranks.distributed:
            while not marker.is_file():  # rank 0 is working; no collective can wait that long
                time.sleep(5)
            return json.loads(marker.read_text())
        self.log(f"round {k}: {name} ...")
        start = time.perf_counter()
        summary = work()
        if settings is not None:
            summary["settings"] = settings
        summary["seconds"] = round(time.perf_counter() - start, 2)
        if self.rank.is_main:
            write_json_atomic(marker, summary)
        self.ranks.barrier()  # no rank looks for the next stage's input before this one is done
        self.log(f"round {k}: {name} done in {summary['seconds']:.1f} s")
        _free_memory()
        return summary

    # -- the stages -------------------------------------------------------------------------
    def run(self) -> list[RoundReport]:
        # One improve run per folder: rank 0 holds the lock for the job, the other ranks check it.
        with Ranks.start() as self.ranks:
            if not self.ranks.is_main:
                self.log = lambda line: None  # rank 0 reports for the job
            lock = lock_folder(self.out, self.ranks)
            try:
                if self.rank.is_main:  # markers a killed run was writing
                    for folder in (self.out, *self.out.glob("round-*")):
                        remove_stale_tmp(folder)
                self.ranks.barrier()
                return self._run()
            finally:
                lock.release()

    def _run(self) -> list[RoundReport]:
        self.check_settings()
        # Evaluation may be added on a rerun (it is free in loop.json), so its marker keeps its settings.
        evaluation = json.loads(json.dumps(asdict(self.s.evaluation))) if self.s.evaluation is not None else None
        if evaluation is not None:
            self._stage(0, "evaluate", lambda: self._evaluate(self.model_for(1), self.round_dir(0) / "eval"),
                        settings=evaluation)
        reports = []
        for k in range(1, self.s.rounds + 1):
            model, rdir = self.model_for(k), self.round_dir(k)
            stages = {
                "generate": self._stage(k, "generate", lambda: self._generate(k, model, rdir / "pairs")),
                "curate": self._stage(k, "curate", lambda: self._curate(rdir / "pairs", rdir / "curated")),
                "train": self._stage(k, "train", lambda: self._train(model, rdir / "curated", rdir / "train"),
                                     all_ranks=True),
            }
            trained = str(rdir / "train" / "model")
            if self.s.evaluation is not None:
                stages["evaluate"] = self._stage(k, "evaluate", lambda: self._evaluate(trained, rdir / "eval"),
                                                 settings=evaluation)
            reports.append(RoundReport(k, model, trained, stages))
        return reports

    def _generate(self, k: int, model: str, store: Path) -> dict[str, Any]:
        from judgefree.generation.driver import generate_store
        from judgefree.engine import Engine

        # A new seed per round: round k samples fresh responses from m_{k-1}.
        settings = replace(self.s.generation, model=model, seed=self.s.generation.seed + k - 1)
        engine = Engine.from_pretrained(model, dtype=self.s.dtype, device=self._device())
        report = generate_store(engine, self.s.images, store, settings, chunk_size=self.s.chunk_size,
                                progress=self.s.progress, ranks=self.ranks)
        if report.skipped:  # the stage still counts as done: a rerun will not retry these images
            self.log(f"round {k}: {len(report.skipped)} images gave no pair, e.g. {report.skipped[0]['image']}: "
                     f"{report.skipped[0]['reason']} (all in {store / 'manifest.json'})")
        return {"store": str(store), "pairs": report.already_stored + report.generated,
                "skipped_images": len(report.skipped)}

    def _curate(self, pairs: Path, curated: Path) -> dict[str, Any]:
        from judgefree.curate.clip_score import ClipScorer
        from judgefree.curate.curation import curate_store

        clip = self.s.clip
        if self.ranks.distributed and clip.device in ("auto", "cuda"):
            clip = replace(clip, device=self._device(None if clip.device == "auto" else clip.device))
        scorer = ClipScorer.load(clip)
        report = curate_store(pairs, curated, scorer, self.s.selection, clip_settings=self.s.clip.to_manifest(),
                              progress=self.s.progress, ranks=self.ranks)
        return {"store": str(curated), **{k: report.summary.get(k) for k in CURATE_KEYS}}

    def _train(self, model: str, curated: Path, out: Path) -> dict[str, Any]:
        from judgefree.train.trainer import train_dpo

        result = train_dpo(model, curated, out, self.s.train, device=self.s.device, progress=self.s.progress)
        first, last = (result.metrics[0], result.metrics[-1]) if result.metrics else ({}, {})
        keys = ("loss", "rewards/margins", "rewards/accuracies", "tokens_per_s", "peak_memory_gib")
        return {"model": str(result.model_dir), "steps": result.steps,
                "first": {k: first.get(k) for k in keys}, "last": {k: last.get(k) for k in keys}}

    def _evaluate(self, model: str, out: Path) -> dict[str, Any]:
        from judgefree.evaluation import halbench
        from judgefree.evaluation.chair import evaluate_captions
        from judgefree.io import read_records, write_json_atomic as write_eval_json

        ev = self.s.evaluation
        out.mkdir(parents=True, exist_ok=True)
        answers, result = out / "answers.jsonl", out / "chair.json"
        settings = halbench.RunSettings(model, ev.max_new_tokens, ev.batch_size, 0.0, self.s.generation.seed)
        questions = halbench.load_questions(ev.questions, ev.images)
        engine = halbench.load_engine(model, dtype=self.s.dtype, device=self._device())
        summary = halbench.run_benchmark(engine, questions, answers, settings, progress=self.s.progress,
                                         ranks=self.ranks)
        if summary.failed:
            raise RuntimeError(f"{len(summary.failed)} evaluation questions failed, e.g. {summary.failed[0]}; "
                               "rerun to retry them")

        def score() -> dict[str, Any]:  # CHAIR on the merged answers, once
            report = evaluate_captions(read_records(answers, "caption"), ev.coco_annotations)
            write_eval_json(result, report.to_json())
            return asdict(report.metrics)

        return {"answers": str(answers), "chair": str(result), "metrics": self.ranks.on_main(score)}

    def _device(self, device: str | None = "default") -> str | None:
        """This rank's device: one GPU per rank under torchrun."""
        from judgefree.distributed import rank_device

        device = self.s.device if device == "default" else device
        return rank_device(device, self.ranks) if self.ranks.distributed else device


def _free_memory() -> None:
    """Release a stage's engine / CLIP / trainer before the next one loads its model."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
