"""Verdicts against exact truth (h order, CLIP, swaps right / wrong) on hand-made pairs, and the
report's page marking exactly the hallucinated words."""

from types import SimpleNamespace

from judgefree.pipeline.report import _marked, plot
from judgefree.world.scenes import EVAL_SEED_START, make_scene
from judgefree.world.verdicts import judge

SCENE = make_scene(EVAL_SEED_START + 1, "eval")  # one yellow cross


def _pair(chosen, rejected, swapped, image="x.png", kept=True):
    # swap mode: "chosen" is CLIP's preference; swapped: the engine's (h) order was reversed
    h_chosen, h_rejected = (0.5, 0.0) if swapped else (0.0, 0.5)
    return SimpleNamespace(image=image, chosen_text=chosen, rejected_text=rejected, swapped=swapped,
                           chosen_score=1.0, rejected_score=0.5, chosen_h=h_chosen, rejected_h=h_rejected, kept=kept)


def test_verdicts_count_right_and_wrong_against_the_scene():
    assert SCENE.truth() == [{"class": "cross", "colour": "yellow", "count": 1}]
    records = [
        _pair("a yellow cross .", "a heart .", swapped=False),  # h right, CLIP right
        _pair("a yellow cross .", "a heart .", swapped=True),  # h wrong, CLIP right: a right swap
        _pair("a heart .", "a yellow cross .", swapped=True),  # h right, CLIP wrong: a wrong swap
        _pair("a red cross .", "a yellow cross .", swapped=False),  # wrong colour costs 1: both wrong
        _pair("a cross .", "a yellow cross .", swapped=False),  # a tie: no verdict
        SimpleNamespace(image="x.png", chosen_text="a", rejected_text="b", swapped=None, chosen_score=None,
                        rejected_score=None, chosen_h=0.0, rejected_h=0.5, kept=False),  # unscored: not counted
    ]
    v = judge(records, lambda path: SCENE)
    assert (v.pairs, v.ties, v.h_order_right, v.clip_right) == (5, 1, 2, 2)
    assert (v.swaps, v.swaps_right, v.swaps_wrong) == (2, 1, 1)
    assert v.to_json()["clip_accuracy"] == 0.5 and v.to_json()["swap_rate"] == 0.4
    # every scored pair kept: of the 4 decided, chosen truly better in 2
    assert (v.kept, v.kept_ties, v.kept_right) == (5, 1, 2)


def test_verdicts_read_the_order_from_h_and_scores_when_curation_did_not_swap():
    # drop / ignore modes keep the generation's roles: chosen is the low-h response whatever CLIP says
    def pair(chosen, rejected, chosen_score, kept):
        return SimpleNamespace(image="x.png", chosen_text=chosen, rejected_text=rejected, swapped=False,
                               chosen_score=chosen_score, rejected_score=0.5, chosen_h=0.0, rejected_h=0.4, kept=kept)

    records = [
        pair("a yellow cross .", "a heart .", 0.9, kept=True),  # h right, CLIP right
        pair("a yellow cross .", "a heart .", 0.1, kept=False),  # h right, CLIP wrong (dropped)
        pair("a heart .", "a yellow cross .", 0.1, kept=False),  # h wrong, CLIP right (dropped)
        pair("a heart .", "a yellow cross .", 0.9, kept=True),  # h wrong, CLIP wrong: kept and wrong
    ]
    v = judge(records, lambda path: SCENE)
    assert (v.pairs, v.ties, v.h_order_right, v.clip_right, v.swaps) == (4, 0, 2, 2, 0)
    assert (v.kept, v.kept_right) == (2, 1) and v.to_json()["kept_accuracy"] == 0.5


def test_page_marks_hallucinated_words_only(tmp_path):
    text = _marked("a red circle. two squares, a box.", {"circle", "box"})
    assert text == "a red <mark>circle</mark>. two squares, a <mark>box</mark>."
    rounds = [{"round": k, "metrics": {"chair_s": 0.5, "chair_i": 0.3, "recall": 0.6, "attribute_error": 0.1}}
              for k in (0, 1)]
    plot(tmp_path / "p.png", rounds)
    assert (tmp_path / "p.png").stat().st_size > 500
