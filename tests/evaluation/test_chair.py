"""CHAIR on the hand-made fixture (conftest.py), against counts worked out by hand."""

from __future__ import annotations

import pytest

from judgefree.evaluation.chair import caption_text, evaluate_captions, score_caption
from judgefree.evaluation.vocabulary import load_vocabulary


def test_fixture_counts_match_hand_computed_values(coco_dir, caption_records):
    report = evaluate_captions(caption_records, coco_dir)
    m = report.metrics
    # Whole captions (the default): 4 of 5 captions hallucinate (1, 2, 3, 5: its cat);
    # mentions 4+3+3+0+3 = 13, hallucinated 2+1+1+0+1 = 5; ground-truth objects
    # 2+2+2+1+1 = 8, of which captions name 2+2+2+0+1 = 7.
    assert (m.captions, m.hallucinated_captions) == (5, 4)
    assert (m.mentions, m.hallucinated_mentions) == (13, 5)
    assert (m.gt_objects, m.recalled_objects) == (8, 7)
    assert m.chair_s == pytest.approx(4 / 5)
    assert m.chair_i == pytest.approx(5 / 13)
    assert m.recall == pytest.approx(7 / 8)
    assert m.truncated_captions == 1 and not m.unfinished_dropped
    assert (m.protocol, report.whole_caption_metrics, report.notes) == ("chair", None, [])


def test_dropping_the_unfinished_sentence_is_an_option_that_reports_both(coco_dir, caption_records):
    report = evaluate_captions(caption_records, coco_dir, drop_unfinished=True)
    m = report.metrics
    # Caption 5 loses "A cat sits on the toilet seat next to a": 3 of 5 hallucinate;
    # mentions 4+3+3+0+1 = 11, hallucinated 2+1+1+0+0 = 4; recall unchanged (7 of 8).
    assert (m.hallucinated_captions, m.mentions, m.hallucinated_mentions, m.recalled_objects) == (3, 11, 4, 7)
    assert m.chair_s == pytest.approx(3 / 5) and m.chair_i == pytest.approx(4 / 11) and m.unfinished_dropped
    assert report.whole_caption_metrics == evaluate_captions(caption_records, coco_dir).metrics
    saved = report.to_json()
    assert saved["metrics"]["chair_s"] == pytest.approx(3 / 5)
    assert saved["metrics_whole_captions"]["chair_s"] == pytest.approx(4 / 5)
    five = {row["question_id"]: row for row in saved["captions"]}["q5"]
    assert five["truncated"] is True and five["scored_text"] == "A toilet in a bathroom."
    assert (five["mentions"], five["hallucinated"]) == ([["toilet", "toilet"]], [])


def test_per_caption_detail(coco_dir, caption_records):
    rows = {row["question_id"]: row for row in evaluate_captions(caption_records, coco_dir).to_json()["captions"]}
    one = rows["q1"]
    assert one["mentions"] == [["man", "person"], ["puppy", "dog"], ["frisbee", "frisbee"], ["cat", "cat"]]
    assert one["hallucinated"] == [["frisbee", "frisbee"], ["cat", "cat"]]
    assert one["gt_objects"] == ["dog", "person"]
    assert (one["chair_s"], one["chair_i"], one["recall"]) == (1, 0.5, 1.0)
    # Two-word names are matched first: no stray "bear" or "dog" mention.
    assert rows["q2"]["mentions"] == [["teddy bear", "teddy bear"], ["chair", "chair"], ["hot dog", "hot dog"]]
    # Synonyms, and an object known only from the reference captions (fire hydrant).
    three = rows["q3"]
    assert three["image_id"] == 3
    assert three["mentions"] == [["automobile", "car"], ["hydrant", "fire hydrant"], ["motor bike", "motorcycle"]]
    assert three["hallucinated"] == [["motor bike", "motorcycle"]]
    assert three["gt_objects"] == ["car", "fire hydrant"]
    # No objects: neither a hallucination nor a recall; ground truth from a reference caption.
    four = rows["q4"]
    assert (four["mentions"], four["chair_s"], four["chair_i"], four["recall"]) == ([], 0, 0.0, 0.0)
    assert four["gt_objects"] == ["dining table"]
    # Truncated, scored whole by default: its cat counts, "toilet seat" is the toilet.
    five = rows["q5"]
    assert five["truncated"] is True and five["scored_text"] == five["caption"]
    assert five["mentions"] == [["toilet", "toilet"], ["cat", "cat"], ["toilet", "toilet"]]


def test_same_caption_not_truncated_is_scored_whole(coco_dir, caption_records):
    record = caption_records[4] | {"finish_reason": "stop"}
    row = evaluate_captions([record], coco_dir, drop_unfinished=True).captions[0]
    # toilet, cat (hallucinated), "toilet seat" -> toilet (and not a chair)
    assert [(m.word, m.object) for m in row.mentions] == [("toilet", "toilet"), ("cat", "cat"), ("toilet", "toilet")]
    assert [m.object for m in row.hallucinated] == ["cat"]


def test_truncated_flag_also_counts(coco_dir, caption_records):
    record = {k: v for k, v in caption_records[4].items() if k != "finish_reason"} | {"truncated": True}
    assert evaluate_captions([record], coco_dir, drop_unfinished=True).captions[0].scored_text == \
        "A toilet in a bathroom."


def test_failed_generations_are_skipped_and_counted(coco_dir, caption_records):
    failed = {"question_id": "q9", "image_id": 999, "caption": "", "finish_reason": "error"}
    report = evaluate_captions(caption_records + [failed], coco_dir)
    assert (report.metrics.captions, report.metrics.skipped_errors) == (5, 1)


def test_repeated_mentions_all_count():
    vocab = load_vocabulary()
    score = score_caption("A cat. Another cat. A dog and three dogs.", frozenset({"dog"}), vocab)
    assert [m.object for m in score.mentions] == ["cat", "cat", "dog", "dog"]
    assert len(score.hallucinated) == 2 and score.recalled == {"dog"}


def test_caption_key_choice_and_errors(coco_dir):
    assert caption_text({"answer": "a dog"}) == "a dog"
    assert caption_text({"caption": "x", "answer": "y"}, key="answer") == "y"
    with pytest.raises(ValueError, match="none of the fields"):
        caption_text({"image_id": 1})
    with pytest.raises(ValueError, match="must be a string"):
        caption_text({"caption": 3})
    with pytest.raises(ValueError, match="no 'image_id'"):
        evaluate_captions([{"caption": "a dog"}], coco_dir)
    with pytest.raises(ValueError, match="no captions"):
        evaluate_captions([], coco_dir)
    with pytest.raises(ValueError, match="protocol must be one of chair, halbench"):
        evaluate_captions([{"image_id": 1, "caption": "a dog"}], coco_dir, protocol="pope")


def test_score_caption_keeps_its_truncated_contract():
    # callers of score_caption(truncated=True) (the world metric) still get the sentence dropped
    vocab = load_vocabulary()
    assert score_caption("A dog. A cat on a", frozenset(), vocab, truncated=True).scored_text == "A dog."
    assert score_caption("A dog. A cat on a", frozenset(), vocab, truncated=True,
                         drop_unfinished=False).scored_text == "A dog. A cat on a"
