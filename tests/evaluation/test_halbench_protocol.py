"""CHAIR under the Object HalBench protocol (RLHF-V's denominators, counting and synonym
table) on the hand-made fixture (conftest.py), against counts worked out by hand."""

from __future__ import annotations

import pytest

from judgefree.evaluation.chair import HALBENCH_NOTE, evaluate_captions


def test_fixture_counts_under_the_halbench_protocol(coco_dir, caption_records):
    report = evaluate_captions(caption_records, coco_dir, protocol="halbench")
    m = report.metrics
    # Each object once per response: q1 man, puppy, frisbee*, cat* (4, 2 hallucinated);
    # q2 teddy bear, chair, hot dog* (3, 1); q3 automobile, hydrant, motor bike* (3, 1);
    # q4 none; q5 toilet, cat* (toilet counted once; 2, 1). Responses naming an object: 4,
    # all hallucinate -> CHAIRs 4/4 (the chair protocol divides by all 5). Recall as CHAIR's.
    assert (m.protocol, m.captions, m.captions_with_objects, m.hallucinated_captions) == ("halbench", 5, 4, 4)
    assert (m.mentions, m.hallucinated_mentions) == (12, 5)
    assert m.chair_s == pytest.approx(1.0) and m.chair_i == pytest.approx(5 / 12)
    assert m.recall == pytest.approx(7 / 8)
    assert report.notes == [HALBENCH_NOTE] and "cannot run offline" in HALBENCH_NOTE
    dropped = evaluate_captions(caption_records, coco_dir, protocol="halbench", drop_unfinished=True)
    assert (dropped.metrics.hallucinated_captions, dropped.metrics.mentions) == (3, 11)
    assert dropped.metrics.chair_s == pytest.approx(3 / 4)
    assert dropped.whole_caption_metrics == m


def test_denominators_short_responses_and_refined_synonyms(coco_dir):
    records = [
        # 3 words: RLHF-V gives such a response no objects (the chair protocol counts its dog)
        {"question_id": "a", "image_id": 4, "caption": "A dog sits."},
        # refined table: a pedestrian is a person, a coffee table the image's dining table
        {"question_id": "b", "image_id": 4, "caption": "A pedestrian walks past the coffee table."},
        # repeats: one hallucinated object named twice counts once
        {"question_id": "c", "image_id": 4, "caption": "A cat naps on the table beside another cat."},
    ]
    chair = evaluate_captions(records, coco_dir).metrics
    halbench = evaluate_captions(records, coco_dir, protocol="halbench").metrics
    # chair: a: dog*; b: table (no "pedestrian" in the plain table; "coffee" is no object); c: cat*, table, cat*
    assert (chair.mentions, chair.hallucinated_mentions, chair.hallucinated_captions) == (5, 3, 2)
    assert chair.chair_s == pytest.approx(2 / 3)
    # halbench: a: none; b: pedestrian*, coffee table; c: cat*, table
    assert (halbench.mentions, halbench.hallucinated_mentions, halbench.captions_with_objects) == (4, 2, 2)
    assert halbench.hallucinated_captions == 2 and halbench.chair_s == pytest.approx(2 / 2)
    assert halbench.chair_i == pytest.approx(2 / 4)
