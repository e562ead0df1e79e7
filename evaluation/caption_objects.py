"""Find the COCO objects a caption names, the way CHAIR does (Rohrbach et al., 2018):
lower-case, split into words, singularise, join multi-word names (longest first), drop
"seat" when a toilet is named, keep the words that are COCO synonyms.

Singularisation uses the ``inflect`` package (maintained, pure Python, works offline)
instead of the original's ``pattern.en``; words that belong to the vocabulary itself are left
as they are, because a rule-based singulariser mangles some of them ("bus" -> "bu").
Compounds of "children" ("grandchildren"), which ``inflect`` leaves alone, are singularised
by their last part. The word splitter is a regular expression standing in for
``nltk.word_tokenize`` (whose model data cannot be downloaded here): letters/digits with inner
hyphens form a word, clitics ("'s" right after a word) and punctuation are tokens of their
own, so "dog's" still names a dog, an opening quote does not stick to the next word
("'hot dogs'" names hot dogs) and a comma keeps "hot, dog" from reading as "hot dog".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from judgefree.evaluation.vocabulary import CocoVocabulary

# A clitic ("'s", "'re") only right after a word; elsewhere an apostrophe is an (opening) quote.
_TOKEN = re.compile(r"[^\W_]+(?:-[^\W_]+)*|(?<=[^\W_])'[^\W_]+|[^\w\s]|_")
# A sentence ends at . ! ? (with closing quotes/brackets) followed by white space or the end,
# or at a line break; "3.5" and "e.g.x" do not end one.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)|\n")


@dataclass(frozen=True, slots=True)
class Mention:
    """One object named in a caption: the word(s) as matched and the COCO class."""

    word: str
    object: str
    index: int  # position among the caption's words after phrase joining


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return _TOKEN.findall(text.lower())


@lru_cache(maxsize=1)
def _inflect_engine():
    import inflect  # costs a few seconds to import (typeguard instruments it); only when scoring

    return inflect.engine()


@lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """The singular of an English noun (``inflect``); other words come back unchanged."""
    if not word.isalpha():
        return word
    singular = _inflect_engine().singular_noun(word)
    if isinstance(singular, str) and singular:
        return singular
    if word.endswith("children"):  # "grandchildren", "schoolchildren": inflect knows only "children"
        return word[: -len("ren")]
    return word


def join_phrases(words: list[str], vocabulary: CocoVocabulary) -> list[str]:
    """Replace multi-word names by one token, trying the longest phrase first at each position."""
    joined: list[str] = []
    longest = vocabulary.longest_phrase
    i = 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 1, -1):
            replacement = vocabulary.phrases.get(tuple(words[i : i + size]))
            if replacement is not None:
                joined.append(replacement)
                i += size
                break
        else:
            joined.append(words[i])
            i += 1
    return joined


def caption_mentions(text: str, vocabulary: CocoVocabulary) -> list[Mention]:
    """Every COCO object mention in ``text``, in order (repeats count)."""
    protected = vocabulary.protected_words
    words = [w if w in protected else singularize(w) for w in tokenize(text)]
    words = join_phrases(words, vocabulary)
    if "toilet" in words and "seat" in words:
        # "the seat of the toilet" would otherwise fire "chair" (original rule).
        words = [w for w in words if w != "seat"]
    mentions = []
    for index, word in enumerate(words):
        cls = vocabulary.class_of(word)
        if cls is not None:
            mentions.append(Mention(word, cls, index))
    return mentions


def drop_incomplete_sentence(text: str) -> str:
    """Cut ``text`` after its last complete sentence (all of it when none is complete).

    For captions stopped by the token limit: the half-written last sentence is not scored.
    """
    stripped = text.rstrip()
    if not stripped:
        return ""
    last_end = None
    for match in _SENTENCE_END.finditer(stripped):
        last_end = match.end()
    if last_end is None:
        return ""
    return stripped[:last_end].rstrip()

