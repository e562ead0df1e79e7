"""The shipped synonym table (Rohrbach et al., 2018) and its parser."""

from __future__ import annotations

from importlib import resources

import pytest

from judgefree.evaluation.vocabulary import load_vocabulary, parse_synonym_table, vocabulary_from_text


# The category names of COCO's instances_*2014.json, in category-id order.
COCO_CATEGORIES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


def test_shipped_table_has_the_80_coco_classes():
    vocab = load_vocabulary()
    assert vocab.classes == COCO_CATEGORIES
    for cls in vocab.classes:  # every class name maps to itself
        assert vocab.class_of(cls) == cls
    assert vocab.class_of("puppy") == "dog"
    assert vocab.class_of("motor bike") == "motorcycle"
    assert vocab.class_of("iphone") == "cell phone"  # the table spells it "iPhone"
    assert vocab.class_of("table") == "dining table"
    assert vocab.longest_phrase == 3  # "stove top oven"


def test_table_ships_with_its_license():
    data = resources.files("judgefree.evaluation").joinpath("data")
    table = data.joinpath("chair_synonyms.txt").read_text(encoding="utf-8")
    assert "BSD-2-Clause" in table.splitlines()[3]
    license_text = data.joinpath("CHAIR_LICENSE.txt").read_text(encoding="utf-8")
    assert "Rohrbach" in license_text and "Redistribution and use in source and binary forms" in license_text


def test_parse_ignores_comments_spacing_and_duplicates():
    synonyms, classes = parse_synonym_table("# header\n\nDog, puppy,  pup , puppy\nhot dog, frankfurter\n")
    assert classes == ("dog", "hot dog")
    assert synonyms == {"dog": "dog", "puppy": "dog", "pup": "dog", "hot dog": "hot dog",
                        "frankfurter": "hot dog"}
    vocab = vocabulary_from_text("dog\nhot dog\n")
    assert vocab.phrases[("hot", "dog")] == "hot dog"
    assert "hot" in vocab.protected_words


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("dog\n , ,\n", "line 2 names no object"), ("dog\ncat\ndog, pup\n", "appears twice"),
])
def test_parse_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_synonym_table(text)


def test_custom_table_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="synonym table not found"):
        load_vocabulary(str(tmp_path / "missing.txt"))
    path = tmp_path / "table.txt"
    path.write_text("cat, kitty\n")
    assert load_vocabulary(str(path)).class_of("kitty") == "cat"


def test_refined_table_adds_object_halbench_synonyms():
    plain, refined = load_vocabulary(), load_vocabulary(refined=True)
    added = {"brother": "person", "pedestrian": "person", "coffee table": "dining table", "remote control": "remote"}
    assert {k: refined.class_of(k) for k in added} == added
    assert all(plain.class_of(k) is None for k in added)
    assert set(refined.synonym_to_class) - set(plain.synonym_to_class) == set(added)
    assert refined.phrases[("coffee", "table")] == "coffee table" and refined.classes == plain.classes
