"""Word-level CHAIR rules: tokenising, singularising, multi-word names, special cases,
and dropping the incomplete last sentence of a truncated caption."""

from __future__ import annotations

import pytest

from judgefree.evaluation.caption_objects import (
    caption_mentions,
    drop_incomplete_sentence,
    singularize,
    tokenize,
)
from judgefree.evaluation.vocabulary import load_vocabulary


def objects(text: str) -> list[tuple[str, str]]:
    return [(m.word, m.object) for m in caption_mentions(text, load_vocabulary())]


def test_tokenize_splits_clitics_and_punctuation_keeps_hyphenated_words():
    assert tokenize("The Dog's bone, hot-dog; 3.5 cats!") == [
        "the", "dog", "'s", "bone", ",", "hot-dog", ";", "3", ".", "5", "cats", "!"]


def test_an_opening_quote_does_not_stick_to_the_next_word():
    assert tokenize("'hot dogs' and the dogs' bowls") == ["'", "hot", "dogs", "'", "and", "the", "dogs", "'", "bowls"]
    # 'hot dogs' are hot dogs, not a dog (a hallucination in an image without dogs)
    assert objects("He sells 'hot dogs' and 'teddy bears'.") == [
        ("hot dog", "hot dog"), ("teddy bear", "teddy bear")]


@pytest.mark.parametrize("plural, singular", [
    ("dogs", "dog"), ("knives", "knife"), ("women", "woman"), ("geese", "goose"),
    ("mice", "mouse"), ("ponies", "pony"), ("buses", "bus"), ("glasses", "glass"),
    ("sheep", "sheep"), ("dog", "dog"), ("the", "the"), ("3", "3"),
    ("grandchildren", "grandchild"), ("schoolchildren", "schoolchild"), ("children", "child"),
])
def test_singularize(plural, singular):
    assert singularize(plural) == singular


def test_plurals_and_irregular_plurals_map_to_their_class():
    assert objects("Children, women and geese near three knives and mice.") == [
        ("children", "person"), ("woman", "person"), ("goose", "bird"), ("knife", "knife"),
        ("mouse", "mouse")]


def test_grandchildren_are_people():
    assert objects("Grandchildren hug their grandchild.") == [("grandchild", "person"), ("grandchild", "person")]


def test_vocabulary_words_are_not_singularised():
    # A rule-based singulariser turns "bus" into "bu" and "tennis" into "tenni".
    assert objects("A bus, a tennis racket, skis and scissors.") == [
        ("bus", "bus"), ("tennis racket", "tennis racket"), ("skis", "skis"), ("scissors", "scissors")]


def test_two_word_names_are_matched_first_and_need_adjacent_words():
    assert objects("Hot dogs and teddy bears.") == [("hot dog", "hot dog"), ("teddy bear", "teddy bear")]
    # Separated by a comma: a dog, not a hot dog (and "hot" is no object).
    assert objects("It is hot, dog.") == [("dog", "dog")]
    assert objects("A stove top oven and a cell phone.") == [("stove top oven", "oven"), ("cell phone", "cell phone")]


def test_original_special_cases():
    assert objects("A baby bird and an adult elephant.") == [("bird", "bird"), ("elephant", "elephant")]
    assert objects("A passenger jet.") == [("jet", "airplane")]
    assert objects("A man in a bow tie.") == [("man", "person"), ("tie", "tie")]
    assert objects("The pitcher stands on home plate.") == [("pitcher", "person")]
    # "train track" is in the original's double-word list and names no object: no train here.
    assert objects("Train tracks run past a bench.") == [("bench", "bench")]
    assert objects("A train on the train track.") == [("train", "train")]
    # "seat" is a chair unless a toilet is named.
    assert objects("A seat by the window.") == [("seat", "chair")]
    assert objects("The seat of the toilet is up.") == [("toilet", "toilet")]


def test_upper_case_and_synonym_table_capitals():
    assert objects("An IPHONE on a Table.") == [("iphone", "cell phone"), ("table", "dining table")]


def test_no_objects():
    assert objects("An empty room with white walls.") == []
    assert objects("") == []


@pytest.mark.parametrize("text, kept", [
    ("A cat sits. It has a", "A cat sits."),
    ("A cat sits! Is it a dog? The", "A cat sits! Is it a dog?"),
    ("The scale reads 3.5 kg and", ""),  # no complete sentence: nothing is scored
    ("A cat sits on a", ""),
    ('He said "hi." Then a dog', 'He said "hi."'),
    ("Objects:\n- a dog\n- a c", "Objects:\n- a dog"),
    ("A complete sentence.  ", "A complete sentence."),
    ("", ""),
])
def test_drop_incomplete_sentence(text, kept):
    assert drop_incomplete_sentence(text) == kept
