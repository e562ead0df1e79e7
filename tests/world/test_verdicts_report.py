"""Verdicts against exact truth (h order, CLIP, swaps right / wrong) on hand-made pairs, and the
report's page marking exactly the hallucinated words."""

from types import SimpleNamespace

from judgefree.pipeline.report import _marked, plot
from judgefree.world.scenes import EVAL_SEED_START, make_scene
from judgefree.world.verdicts import judge

SCENE = make_scene(EVAL_SEED_START + 1, "eval")  # one yellow cross


def _pair(chosen, rejected, swapped, image="x.png"):
    # after curation "chosen" is CLIP's preference; swapped: the engine's (h) order was reversed
    return SimpleNamespace(image=image, chosen_text=chosen, rejected_text=rejected, swapped=swapped,
                           chosen_score=1.0, rejected_score=0.5)


def test_verdicts_count_right_and_wrong_against_the_scene():
    assert SCENE.truth() == [{"class": "cross", "colour": "yellow", "count": 1}]
    records = [
        _pair("a yellow cross .", "a heart .", swapped=False),  # h right, CLIP right
        _pair("a yellow cross .", "a heart .", swapped=True),  # h wrong, CLIP right: a right swap
        _pair("a heart .", "a yellow cross .", swapped=True),  # h right, CLIP wrong: a wrong swap
        _pair("a red cross .", "a yellow cross .", swapped=False),  # wrong colour costs 1: both wrong
        _pair("a cross .", "a yellow cross .", swapped=False),  # a tie: no verdict
        SimpleNamespace(image="x.png", chosen_text="a", rejected_text="b", swapped=None, chosen_score=None,
                        rejected_score=None),  # unscored: not counted
    ]
    v = judge(records, lambda path: SCENE)
    assert (v.pairs, v.ties, v.h_order_right, v.clip_right) == (5, 1, 2, 2)
    assert (v.swaps, v.swaps_right, v.swaps_wrong) == (2, 1, 1)
    assert v.to_json()["clip_accuracy"] == 0.5 and v.to_json()["swap_rate"] == 0.4


def test_page_marks_hallucinated_words_only(tmp_path):
    text = _marked("a red circle. two squares, a box.", {"circle", "box"})
    assert text == "a red <mark>circle</mark>. two squares, a <mark>box</mark>."
    rounds = [{"round": k, "metrics": {"chair_s": 0.5, "chair_i": 0.3, "recall": 0.6, "attribute_error": 0.1}}
              for k in (0, 1)]
    plot(tmp_path / "p.png", rounds)
    assert (tmp_path / "p.png").stat().st_size > 500
