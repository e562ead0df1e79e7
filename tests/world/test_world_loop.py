"""The loop on a small fixed-seed world (``judgefree.world.config.SMALL``), end to end: build,
m0 -> pairs -> CLIP curation -> DPO -> m1, every model scored on the same held-out scenes; and
that the loop lowers CHAIRi there, by a margin derived from the spread measured across seeds
(docs/world.md, "The CI test")."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from judgefree.pipeline.demo import DemoSettings, run_world_demo
from judgefree.world.config import SMALL
from judgefree.world.metric import evaluate
from judgefree.world.scenes import scenes


CI_DEMO = DemoSettings(world=SMALL, pool=96, batch_size=8, epochs=2)
SEEDS = (0, 1, 2, 3, 4)
# Measured on this machine (docs/world.md): m1 - m0 CHAIRi over seeds 0-4 was -0.3, -6.8, -3.5,
# -8.5, -5.5 points (mean -4.9, sd 3.2, so the mean of five has a standard error of 1.4). The
# test asks the mean of the five to stay within two standard errors of that measurement: below
# -4.9 + 2 x 1.4 = -2.0 points (another CPU's arithmetic builds another world). No single seed
# is asked to improve (seed 0 improved by 0.3 only).
MARGIN = 0.020


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import torch

    from judgefree.world.build import world_folder

    root = tmp_path_factory.mktemp("world")
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # not the one thread both use inside: they must give this count back
    try:
        world = world_folder(SMALL, root / "cache", log=lambda line: None)
        after_build = torch.get_num_threads()
        out = root / "run"
        summary = run_world_demo(out, replace(CI_DEMO, seed=0), progress=False, log=lambda line: None, world=world)
        threads = (after_build, torch.get_num_threads())
    finally:
        torch.set_num_threads(before)
    return world, out, summary, threads


@pytest.mark.slow  # builds a small world and runs one round: about 3 minutes on a loaded 2-core CPU
def test_small_world_round_writes_its_reports_and_they_agree_with_the_captions(demo_run):
    world, out, summary, threads = demo_run
    # both run with one torch thread and give the caller's count back (a library call must not keep it)
    assert threads == (3, 3)
    rounds = json.loads((out / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    held_out = scenes("eval", SMALL.eval_scenes)
    for r in rounds:
        rows = [json.loads(line) for line in (out / "eval" / f"m{r['round']}.jsonl").read_text().splitlines()]
        assert [row["scene_id"] for row in rows] == [s.scene_id for s in held_out]
        assert all(row["objects"] == s.truth() for row, s in zip(rows, held_out))
        metrics, _ = evaluate([row["caption"] for row in rows], held_out)  # recomputed from the JSONL
        assert metrics.to_json() == r["metrics"]
    from judgefree.world.build import built_summary
    from judgefree.world.version import generator_fingerprint

    assert built_summary(world)["generator"] == generator_fingerprint()  # build.json names the code that built it
    # m0 is the world's: the demo scores the captions its build wrote (world/evaluate.py)
    assert (out / "eval" / "m0.jsonl").read_text() == (world / "m0_eval.jsonl").read_text()
    # the curation's dropped pairs, counted here from the curated store's own marks
    from judgefree.store.pair_store import PairStore

    curated = list(PairStore(out / "round-1" / "curated").records())
    assert rounds[1]["unscored"] == sum(r.score_diff is None for r in curated)
    assert rounds[1]["empty_response"] == sum(any(getattr(r, f"{role}_segments") == 0 and
                                                  getattr(r, f"{role}_score") is None
                                                  for role in ("chosen", "rejected")) for r in curated)
    v = rounds[1]["verdicts"]
    # pairs with both responses scored (an empty response has no sentence to score)
    assert rounds[1]["pairs"] == CI_DEMO.pool and CI_DEMO.pool - 8 <= v["pairs"] <= CI_DEMO.pool
    assert v["swaps_right"] + v["swaps_wrong"] <= v["swaps"]
    assert 0 <= v["clip_right"] <= v["pairs"] - v["ties"]
    page = (out / "index.html").read_text()
    assert page.count("<tr>") == 12 and "truth:" in page
    assert (out / "hallucination.png").stat().st_size > 1000
    # m0 hallucinates on the unbiased scenes (the built-in cause works)
    assert rounds[0]["metrics"]["chair_i"] > 0.15


@pytest.mark.slow  # four more rounds on the same world: about 40 s
def test_the_loop_lowers_hallucination_on_the_small_world_by_the_measured_margin(demo_run, tmp_path):
    world, out, summary, _ = demo_run
    deltas = []
    for seed in SEEDS:
        rounds = summary["rounds"] if seed == 0 else run_world_demo(
            tmp_path / f"seed-{seed}", replace(CI_DEMO, seed=seed), progress=False, log=lambda line: None,
            world=world)["rounds"]
        deltas.append(rounds[1]["metrics"]["chair_i"] - rounds[0]["metrics"]["chair_i"])
    mean = sum(deltas) / len(deltas)
    assert mean < -MARGIN, f"m1 - m0 CHAIRi per seed {[round(d, 3) for d in deltas]}, mean {mean:.3f}"
