"""Recorded evaluations: the demo scores m0 from the captions the world build wrote (greedy,
so recaptioning would give the same text) and only for the very scenes they were written for."""

import json

from judgefree.world.evaluate import _scored, evaluate_recorded
from judgefree.world.metric import evaluate
from judgefree.world.scenes import EVAL, scenes

HELD_OUT = scenes("eval", 4, dist=EVAL)
CAPTIONS = ["there is a red circle .", "i can see two yellow arrows .", "a box .", "in this image , ."]


def test_recorded_captions_are_rescored_and_rewritten_as_a_fresh_evaluation_writes_them(tmp_path):
    recorded, fresh, again = tmp_path / "m0_eval.jsonl", tmp_path / "fresh.jsonl", tmp_path / "m0.jsonl"
    _scored(CAPTIONS, HELD_OUT, recorded)
    metrics, texts = evaluate_recorded(recorded, HELD_OUT, again)
    assert texts == CAPTIONS
    assert metrics == evaluate(CAPTIONS, HELD_OUT)[0]
    _scored(CAPTIONS, HELD_OUT, fresh)
    assert again.read_text() == fresh.read_text()
    rows = [json.loads(line) for line in again.read_text().splitlines()]
    assert [r["scene_id"] for r in rows] == [s.scene_id for s in HELD_OUT]


def test_recorded_captions_of_other_scenes_or_no_record_mean_a_fresh_evaluation(tmp_path):
    recorded = tmp_path / "m0_eval.jsonl"
    assert evaluate_recorded(recorded, HELD_OUT) is None  # never written
    _scored(CAPTIONS[:3], HELD_OUT[:3], recorded)
    assert evaluate_recorded(recorded, HELD_OUT) is None  # fewer scenes
    _scored(CAPTIONS, scenes("eval", 4, start=100, dist=EVAL), recorded)
    assert evaluate_recorded(recorded, HELD_OUT) is None  # other scenes
