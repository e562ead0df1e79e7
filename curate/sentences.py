"""Split a response into the text segments CLIP scores: sentences, and sub-sentences where a
sentence is longer than the CLIP tokenizer's context.

Sentence boundaries inside a line come from pysbd, a maintained rule-based segmenter (the
Golden Rules of the Pragmatic Segmenter; it gets 47 of their 48 English cases right, where
this module's former hand-written rules got 29: docs/sentences.md). What is ours is the
handling of model output around it: every line is its own unit (newlines are hard
boundaries), an inline list after a colon starts on its own line, markdown marks and list
markers are stripped, a few abbreviations of descriptions that pysbd's English list lacks
("approx.", "ca.", "cf.") are added, a cut with no space at it is undone, and a sentence
too long for CLIP is cut to fit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

# Never end a sentence before lower case or a number ("approx. five", "vol. 2"); pysbd's
# English list already holds titles, "e.g.", "i.e.", "vs.", "fig.", "no.", "etc." and more.
EXTRA_ABBREVIATIONS = ("approx", "ca", "cf", "est", "incl", "eq", "ch", "vol", "figs")

# Bullets, "1." / "1)" / "(1)", and lower-case letter items "a)" / "a." ("J. Smith" is no item).
_LIST_MARKER = re.compile(r"^\s*(?:[-*+\u2022\u00b7\u2013\u2014\u2043>]+|\(?\d{1,3}\.?\)|\(?\d{1,3}\.|\(?[a-z][.)])(?:\s+|$)")
_MARKDOWN = re.compile(r"(\*\*|__|`+|^#+\s*)")
# An inline list after a colon ("Objects: 1. a cat 2. a dog") starts on its own line.
_INLINE_LIST = re.compile(r"([:;])\s+(?=\(?\d{1,3}[.)]\s)")


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd
    from pysbd.lang.english import English

    class DescriptionEnglish(English):
        class Abbreviation(English.Abbreviation):
            ABBREVIATIONS = English.Abbreviation.ABBREVIATIONS + list(EXTRA_ABBREVIATIONS)

    segmenter = pysbd.Segmenter(language="en", clean=False)
    segmenter.language_module = DescriptionEnglish  # pysbd's languages are classes like this one
    return segmenter


def _split_line(line: str) -> list[str]:
    """pysbd's sentences of one line, rejoined where it cut with no space at the cut: a
    query string ("a/b?c=d") or an ellipsis ("OK...fine") is not a sentence boundary."""
    sentences: list[str] = []
    glued = False
    for piece in _segmenter().segment(line):
        if glued:
            sentences[-1] += piece
        else:
            sentences.append(piece)
        glued = not piece[-1:].isspace()
    return sentences


def _clean(sentence: str) -> str:
    """Strip list markers (possibly nested, "- 1. x") and surrounding space."""
    previous = None
    while previous != sentence:
        previous = sentence
        sentence = _LIST_MARKER.sub("", sentence, count=1).strip()
    return sentence


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` in order; lines, list items and markdown handled (see module doc)."""
    out: list[str] = []
    text = _INLINE_LIST.sub("\\1\n", text)
    for raw_line in text.splitlines():
        line = _MARKDOWN.sub("", raw_line).strip()
        if not line:
            continue
        for sentence in _split_line(line):
            sentence = _clean(sentence)
            if any(ch.isalnum() for ch in sentence):  # drop bare markers and punctuation
                out.append(sentence)
    return out


def split_to_fit(sentence: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Cut ``sentence`` at word boundaries into pieces of at most ``max_tokens`` tokens each.

    ``count_tokens`` counts with the start/end tokens included. Every piece is measured with
    it, so the bound holds for any tokenizer; a single word longer than the context (a URL,
    garbage) is the one case cut inside a word.
    """
    if max_tokens < 3:
        raise ValueError(f"max_tokens must leave room for text between start/end tokens, got {max_tokens}")
    if count_tokens(sentence) <= max_tokens:
        return [sentence]
    pieces: list[str] = []
    current: list[str] = []
    for word in sentence.split():
        if count_tokens(word) > max_tokens:
            if current:
                pieces.append(" ".join(current))
                current = []
            pieces.extend(_split_word(word, count_tokens, max_tokens))
        elif current and count_tokens(" ".join(current + [word])) > max_tokens:
            pieces.append(" ".join(current))
            current = [word]
        else:
            current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def _split_word(word: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Longest prefixes that fit, by binary search on the character count."""
    pieces = []
    while word:
        lo, hi = 1, len(word)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(word[:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        pieces.append(word[:lo])
        word = word[lo:]
    return pieces


def segments(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """The texts CLIP scores for one response: its sentences, each cut to fit the context."""
    return [piece for sentence in split_sentences(text) for piece in split_to_fit(sentence, count_tokens, max_tokens)]
