"""The CLIP's training pieces: the exact-truth labels of its sigmoid loss (claims of a sentence,
checked against a scene), the tower's recognition targets, the web scenes and the memoised
tokenizer. The training itself runs in tests/world/test_world_loop.py."""

import numpy as np
import pytest
import torch

from judgefree.world.clip import CachedTokens, hard_negative, holds, positive_sentence
from judgefree.world.metric import claims, score
from judgefree.world.pretrain import labels
from judgefree.world.scenes import CLASS_NAMES, COLOUR_NAMES, EVAL_SEED_START, WEB_SEED_START, make_scene, scenes, web_scenes

SCENE = make_scene(EVAL_SEED_START, "eval")  # two yellow arrows and an orange circle


def test_claims_name_each_class_with_the_colour_said_right_before_it():
    assert claims("here , i can see two yellow arrows and a circle .") == (("arrow", "yellow"), ("circle", None))
    assert claims("the crescent is to the left of the box .") == (("moon", None), ("square", None))
    assert claims("in this image , .") == ()


@pytest.mark.parametrize("sentence, true", [
    ("there are two yellow arrows .", True),
    ("i can see an orange circle and an arrow .", True),
    ("there is a red circle .", False),  # wrong colour
    ("the image shows a yellow arrow and a square .", False),  # one absent class is enough
    ("in this image , .", False),  # says nothing: never a positive
])
def test_holds_against_the_scene_agrees_with_hand_checked_truth(sentence, true):
    assert SCENE.truth() == [{"class": "arrow", "colour": "yellow", "count": 2},
                             {"class": "circle", "colour": "orange", "count": 1}]
    assert holds(claims(sentence), SCENE) is true


def test_training_sentences_are_labelled_as_the_metric_judges_them():
    rng = np.random.default_rng(5)
    for scene in scenes("eval", 40):
        pos, neg = positive_sentence(scene, rng), hard_negative(scene, rng)
        assert holds(claims(pos), scene)
        assert not holds(claims(neg), scene)
        s = score(neg, scene)
        assert s.hallucinated + s.wrong_colour > 0  # the metric calls it false too


def test_recognition_targets_mark_each_class_and_class_colour_pair():
    y = labels([SCENE])
    arrow, circle = CLASS_NAMES.index("arrow"), CLASS_NAMES.index("circle")
    n = len(CLASS_NAMES)
    on = set(torch.nonzero(y[0]).flatten().tolist())
    assert on == {arrow, circle, n + arrow * len(COLOUR_NAMES) + COLOUR_NAMES.index("yellow"),
                  n + circle * len(COLOUR_NAMES) + COLOUR_NAMES.index("orange")}


def test_web_scenes_are_unbiased_training_seeds_disjoint_from_the_biased_ones():
    web = web_scenes(3)
    assert [s.seed for s in web] == [WEB_SEED_START, WEB_SEED_START + 1, WEB_SEED_START + 2]
    assert all(s.split == "train" for s in web)


def test_cached_tokens_equal_the_tokenizer_row_for_row(tmp_path):
    import open_clip

    from judgefree.world.clip import CLIP_NAME, write_config

    open_clip.add_model_config(write_config(tmp_path, 72))
    tokenizer = open_clip.get_tokenizer(CLIP_NAME)
    texts = ["there is a red circle .", "a box .", "there is a red circle ."]
    cached = CachedTokens(tokenizer)
    assert torch.equal(cached(texts), tokenizer(texts))
    assert torch.equal(cached(texts[::-1]), tokenizer(texts[::-1]))  # from the memo this time
