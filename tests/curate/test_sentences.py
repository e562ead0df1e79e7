"""Sentence and sub-sentence splitting (curate/sentences.py: pysbd plus our model-output rules)
on hard cases and a Golden Rules subset, and the 77-token bound measured with open_clip's
real CLIP tokenizer."""

from __future__ import annotations

import itertools
import random

import pytest

from judgefree.curate.sentences import segments, split_sentences, split_to_fit


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A cat sits. A dog runs! Is it raining? Yes.", ["A cat sits.", "A dog runs!", "Is it raining?", "Yes."]),
        # abbreviations that never end a sentence, and decimals
        ("Dr. Smith holds a 3.5 kg box, e.g. a parcel. It is 2.75 m wide.",
         ["Dr. Smith holds a 3.5 kg box, e.g. a parcel.", "It is 2.75 m wide."]),
        ("Mr. and Mrs. Lee stand vs. the wall, i.e. close to it.", ["Mr. and Mrs. Lee stand vs. the wall, i.e. close to it."]),
        # initials, and abbreviations that may end a sentence
        ("J. R. R. Tolkien wrote it. Apples, pears, etc. The table is in the U.S. It opens at 9 a.m. Daily.",
         ["J. R. R. Tolkien wrote it.", "Apples, pears, etc.", "The table is in the U.S.", "It opens at 9 a.m.", "Daily."]),
        # lower-case after a period is no boundary; a number at a sentence end is
        ("The sign says approx. five metres. There are 2. The rest is empty.",
         ["The sign says approx. five metres.", "There are 2.", "The rest is empty."]),
        # quotes, brackets and ellipses
        ('He said "stop." Then he left. (See fig. 2.) Wait... Next.',
         ['He said "stop."', "Then he left.", "(See fig. 2.)", "Wait...", "Next."]),
        # newlines are boundaries even without punctuation; blank lines vanish
        ("First line without a stop\n\nSecond line. Third\r\nfourth", ["First line without a stop", "Second line.", "Third", "fourth"]),
        # lists: numbered, bulleted, lettered, nested, inline after a colon, markdown emphasis
        ("Objects:\n1. A red ball.\n2) A blue cup\n- a spoon\n* **Bold** item\n  - 3. nested\na) lettered\n(b) bracketed",
         ["Objects:", "A red ball.", "A blue cup", "a spoon", "Bold item", "nested", "lettered", "bracketed"]),
        ("The image shows: 1. A cat. 2. A dog. 3. A bird.", ["The image shows:", "A cat.", "A dog.", "A bird."]),
        ("## Summary\nThe `scene` is calm.", ["Summary", "The scene is calm."]),
        # markers or punctuation alone are not sentences
        ("1.\n-\n...\n   ", []),
        ("", []),
    ],
)
def test_split_sentences_hard_cases(text, expected):
    assert split_sentences(text) == expected


# A subset of the Golden Rules of the Pragmatic Segmenter (English), as pySBD's test suite
# carries them (MIT; full set, source and license: bench/data/golden_rules_en.json and
# GOLDEN_RULES_LICENSE.txt). List items lose their markers here, as model output's do.
GOLDEN_RULES_SUBSET = [
    ("Please turn to p. 55.", ["Please turn to p. 55."]),
    ("I work for the U.S. Government in Virginia.", ["I work for the U.S. Government in Virginia."]),
    ("I live in the U.S. How about you?", ["I live in the U.S.", "How about you?"]),
    ("She has $100.00. It is in her bag.", ["She has $100.00.", "It is in her bag."]),
    ("Her email is Jane.Doe@example.com. I sent her an email.", ["Her email is Jane.Doe@example.com.",
                                                                 "I sent her an email."]),
    ('She turned to him, "This is great." She held the book out to show him.',
     ['She turned to him, "This is great."', "She held the book out to show him."]),
    ("Hello!? Is that you?", ["Hello!?", "Is that you?"]),
    ("We make a good team, you and I. Did you see Albert I. Jones yesterday?",
     ["We make a good team, you and I.", "Did you see Albert I. Jones yesterday?"]),
    ("1.) The first item. 2.) The second item.", ["The first item.", "The second item."]),
    ("1) The first item 2) The second item", ["The first item", "The second item"]),
    ("a. The first item b. The second item c. The third list item",
     ["The first item", "The second item", "The third list item"]),
    ("I never meant that.... She left the store.", ["I never meant that....", "She left the store."]),
    ("I wasn\u2019t really ... well, what I mean...see . . . what I'm saying, the thing is . . . I didn\u2019t mean it.",
     ["I wasn\u2019t really ... well, what I mean...see . . . what I'm saying, the thing is . . . I didn\u2019t mean it."]),
]


@pytest.mark.parametrize("text, expected", GOLDEN_RULES_SUBSET)
def test_golden_rules_subset(text, expected):
    assert split_sentences(text) == expected


@pytest.mark.parametrize("text, expected", [
    # a cut with no space at it is no boundary: a query string, an ellipsis run into a word
    ("See https://example.org/a/b?c=d for it. Next.", ["See https://example.org/a/b?c=d for it.", "Next."]),
    ("It was OK...fine. Then rain.", ["It was OK...fine.", "Then rain."]),
    # abbreviations of descriptions that pysbd's English list lacks
    ("He is ca. 2 m tall. Approx. half of it is red, cf. the left side.",
     ["He is ca. 2 m tall.", "Approx. half of it is red, cf. the left side."]),
])
def test_model_output_rules_on_top_of_pysbd(text, expected):
    assert split_sentences(text) == expected


def test_split_sentences_keeps_every_word_in_order():
    text = ("The photo shows Dr. Jones, approx. 40 years old, at 3.30 p.m. He wears a hat! "
            "Behind him:\n1. a car\n2. a tree. Nothing else, etc. The end")
    words = [w for s in split_sentences(text) for w in s.split()]
    stripped = text.replace("\n1.", "").replace("\n2.", "").split()
    assert words == stripped


def _word_count(text: str) -> int:
    """A stand-in tokenizer: one token per word plus start and end tokens."""
    return len(text.split()) + 2


def test_split_to_fit_short_sentence_is_untouched():
    assert split_to_fit("a b c", _word_count, 10) == ["a b c"]


def test_split_to_fit_greedy_word_boundaries():
    sentence = " ".join(f"w{i}" for i in range(25))
    pieces = split_to_fit(sentence, _word_count, 10)  # 8 words per piece fit
    assert [len(p.split()) for p in pieces] == [8, 8, 8, 1]
    assert " ".join(pieces) == sentence


def test_split_to_fit_cuts_a_word_longer_than_the_context():
    def char_count(text: str) -> int:
        return len(text) + 2

    pieces = split_to_fit("ok " + "x" * 25 + " end", char_count, 10)
    assert all(char_count(p) <= 10 for p in pieces)
    assert "".join(pieces).replace(" ", "") == "ok" + "x" * 25 + "end"


def test_split_to_fit_rejects_a_context_without_room():
    with pytest.raises(ValueError, match="max_tokens"):
        split_to_fit("a", _word_count, 2)


@pytest.fixture(scope="module")
def clip_tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-L-14-336")


def _long_text(rng: random.Random) -> str:
    vocab = ["photograph", "astronaut's", "3.1415926", "e.g.", "(left)", "—", "naïve", "café", "https://example.org/a/b?c=d",
             "counter-clockwise", "x" * 300, "🙂", "a", "the", "on", "red", "Z-80", "1,234,567"]
    words = [rng.choice(vocab) for _ in range(rng.randint(80, 400))]
    return " ".join(words) + ". Short one. " + " ".join(rng.choice(vocab) for _ in range(150))


def test_no_segment_exceeds_the_clip_context(clip_tokenizer, fresh_seed):
    """Every segment fits in 77 tokens counting start/end, measured with the real tokenizer,
    and no word is lost or reordered."""
    rng = random.Random(fresh_seed)

    def count(text: str) -> int:
        return len(clip_tokenizer.encode(text)) + 2

    text = _long_text(rng)
    pieces = segments(text, count, clip_tokenizer.context_length)
    assert len(pieces) > 2
    for piece in pieces:
        assert count(piece) <= 77, piece
        tokens = clip_tokenizer([piece])[0]
        assert int((tokens != 0).sum()) == count(piece)  # the tokenizer itself did not truncate
    assert "".join("".join(pieces).split()) == "".join("".join(split_sentences(text)).split())
    # greedy within a sentence: a piece and the first word of the next piece of the same sentence
    # would not have fitted together (the splitter's sentences, measured by their non-space
    # characters, since a word over the context is cut; "(left)" can be a sentence of its own)
    def letters(piece: str) -> int:
        return len("".join(piece.split()))

    sentence_ends = set(itertools.accumulate(letters(sentence) for sentence in split_sentences(text)))
    piece_ends = list(itertools.accumulate(letters(piece) for piece in pieces))
    assert piece_ends[-1] in sentence_ends
    for end, left, right in zip(piece_ends, pieces, pieces[1:]):
        if end not in sentence_ends and not right.startswith("x" * 10) and not left.endswith("x" * 10):
            assert count(left + " " + right.split()[0]) > 77, (left, right)
