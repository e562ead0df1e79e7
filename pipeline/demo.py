"""``judgefree improve --demo``: the self-improvement loop on the world (docs/world.md).

m0 (built by ``judgefree world build``, cached) -> two responses per pool image (h_chosen 0,
h_rejected Gaussian 0.5/0.15) -> curated with the world's CLIP -> DPO -> m1 (-> m2 ...). Every
model is scored on the same held-out evaluation scenes against their exact object lists; the
pairs' verdicts (h order, CLIP) are checked against that truth. Writes OUT/rounds.json,
OUT/eval/m{k}.jsonl, OUT/hallucination.png and OUT/index.html. The pool's labels are never
used by the loop, only to report how right its verdicts were.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from judgefree.threads import torch_threads
from judgefree.world.build import WORLD_THREADS
from judgefree.world.config import WorldConfig

DEFAULT_OUT = Path("runs") / "demo"
POOL_START = 500_000  # pool scenes: evaluation distribution, seeds disjoint from the evaluation scenes


@dataclass(frozen=True, slots=True)
class DemoSettings:
    world: WorldConfig = WorldConfig()
    pool: int = 192
    rounds: int = 1
    temperature: float = 0.7
    max_new_tokens: int = 48
    learning_rate: float = 1e-4
    beta: float = 0.1
    epochs: int = 2
    batch_size: int = 16
    splits: int = 5
    seed: int = 0  # generation and DPO seed
    h_rejected: str = "gaussian:0.5,0.15"
    keep: tuple[int, ...] | None = None  # None: every split kept
    on_disagreement: str = "swap"  # the paper's method; "drop" / "ignore" are ablations (curate.selection)


def loop_settings(demo: DemoSettings, world: Path, out: Path, images: list[Path], progress: bool):
    from judgefree.curate.clip_score import ClipConfig
    from judgefree.curate.selection import Selection
    from judgefree.engine.types import SamplingParams
    from judgefree.generation.driver import GenerationSettings
    from judgefree.pipeline.loop import LoopSettings
    from judgefree.train.config import TrainConfig
    from judgefree.world.build import clip_paths
    from judgefree.world.grammar import PROMPT

    clip_config, clip_weights = clip_paths(world)
    generation = GenerationSettings(model="", prompt=PROMPT, h_chosen="fixed:0", h_rejected=demo.h_rejected,
                                    sampling=SamplingParams(temperature=demo.temperature),
                                    max_new_tokens=demo.max_new_tokens, seed=demo.seed)
    train = TrainConfig(finetune="full", learning_rate=demo.learning_rate, beta=demo.beta, epochs=demo.epochs,
                        batch_size=demo.batch_size, micro_batch_size=demo.batch_size, warmup_ratio=0.0,
                        save_every=10_000, dtype="float32", seed=demo.seed)
    return LoopSettings(model=str(world / "m0"), images=[str(p.resolve()) for p in images], out=str(out),
                        rounds=demo.rounds, generation=generation, chunk_size=64,
                        clip=ClipConfig(model=str(clip_config), weights=str(clip_weights), device="cpu"),
                        selection=Selection(splits=demo.splits, keep_splits=demo.keep,
                                            on_disagreement=demo.on_disagreement),
                        train=train, device="cpu", progress=progress)


def round_entry(k: int, model: Path, metrics, report=None, verdicts=None) -> dict:
    """Round ``k``'s entry of rounds.json: m_k's metrics and, for k > 0, its round's curation
    counts (``report``: the loop's RoundReport; the counts its curate.done keeps, the pairs dropped
    unscored among them, so a reader sees what the kept pairs are out of), the pairs' verdicts and
    the training summary."""
    from judgefree.pipeline.loop import CURATE_KEYS

    entry = {"round": k, "model": str(model), "metrics": metrics.to_json()}
    if report is not None:
        curate = report.stages["curate"]
        entry.update({key: curate.get(key) for key in CURATE_KEYS}, verdicts=verdicts.to_json(),
                     train=report.stages["train"])
    return entry


@torch_threads(WORLD_THREADS)
def run_world_demo(out: str | Path | None = None, demo: DemoSettings = DemoSettings(), progress: bool = True,
                   log=print, world: Path | None = None) -> dict:
    """Run (or resume) the demo; returns the rounds summary written to OUT/rounds.json.
    ``world``: a built world folder (default: ``demo.world`` from the cache, built if missing)."""
    from judgefree.pipeline import report
    from judgefree.pipeline.loop import Loop
    from judgefree.store.pair_store import PairStore
    from judgefree.world.build import world_folder
    from judgefree.world.evaluate import evaluate_model, evaluate_recorded, write_images
    from judgefree.world.scenes import EVAL, scenes
    from judgefree.world.verdicts import judge

    start = time.perf_counter()
    out = Path(out) if out else DEFAULT_OUT
    world = Path(world) if world is not None else world_folder(demo.world, log=log)
    size = demo.world.image_size
    pool = scenes("eval", demo.pool, start=POOL_START, dist=EVAL)
    pool_images = write_images(pool, out / "pool_images", size)
    by_path = {str(p.resolve()): s for p, s in zip(pool_images, pool)}
    held_out = scenes("eval", demo.world.eval_scenes, dist=EVAL)
    eval_images = write_images(held_out, world / "eval_images", size)
    settings = loop_settings(demo, world, out, pool_images, progress)
    reports = Loop(settings, log=log).run()
    rounds = []
    for k, model in [(0, world / "m0")] + [(r.round, Path(r.model_out)) for r in reports]:
        jsonl = out / "eval" / f"m{k}.jsonl"
        # m0 is the world's: its greedy captions of these scenes were written when the world was built
        recorded = evaluate_recorded(world / "m0_eval.jsonl", held_out, jsonl) if k == 0 else None
        metrics, _ = recorded or evaluate_model(model, held_out, eval_images, jsonl, device="cpu")
        if k == 0:
            entry = round_entry(k, model, metrics)
        else:
            verdicts = judge(PairStore(out / f"round-{k}" / "curated").records(), lambda p: by_path[str(Path(p).resolve())])
            entry = round_entry(k, model, metrics, reports[k - 1], verdicts)
        rounds.append(entry)
        m = metrics
        line = (f"m{k}: CHAIRs {m.chair_s:6.1%}  CHAIRi {m.chair_i:6.1%}  recall {m.recall:6.1%}  "
                f"attribute errors {m.attribute_error:6.1%}")
        if k > 0:
            v = entry["verdicts"]
            line += (f"  | swap rate {v['swap_rate']:.1%}, CLIP verdict right {v['clip_accuracy']:.1%} and "
                     f"h order right {v['h_order_accuracy']:.1%} of {v['pairs'] - v['ties']} decided pairs; "
                     f"swaps right/wrong {v['swaps_right']}/{v['swaps_wrong']}")
        log(line)
    summary = {"world": str(world), "rounds": rounds, "seconds": round(time.perf_counter() - start, 1)}
    report.write_rounds(out / "rounds.json", rounds)
    report.plot(out / "hallucination.png", rounds)
    last = rounds[-1]["round"]
    first_rows = {r["scene_id"]: r for r in report.read_jsonl(out / "eval" / "m0.jsonl")}
    last_rows = {r["scene_id"]: r for r in report.read_jsonl(out / "eval" / f"m{last}.jsonl")}
    rows = [{"image": p, "truth": first_rows[s.scene_id]["objects"],
             "captions": {f"m{k}": (rows_[s.scene_id]["caption"], rows_[s.scene_id]["hallucinated"])
                          for k, rows_ in ((0, first_rows), (last, last_rows))}}
            for s, p in list(zip(held_out, eval_images))[:12]]
    report.page(out / "index.html", rows, out / "hallucination.png", "judgefree world demo: m0 vs m%d" % last)
    log(f"wrote {out / 'rounds.json'}, {out / 'hallucination.png'}, {out / 'index.html'} "
        f"in {summary['seconds']:.0f} s")
    return summary


def run_demo(out: str | Path | None = None, progress: bool = True, rounds: int = 1) -> int:
    run_world_demo(out, replace(DemoSettings(), rounds=rounds), progress=progress)
    return 0
