"""Split a response into the text segments CLIP scores: sentences, and sub-sentences where a
sentence is longer than the CLIP tokenizer's context.

Model output is prose with abbreviations ("e.g.", "Dr."), decimals ("3.5 m"), numbered or
bulleted lists, markdown emphasis and newlines. Rules, in order: every line is its own unit
(newlines are hard boundaries); list markers and markdown marks are stripped; inside a line a
sentence ends at ``.``/``!``/``?`` (closing quotes/brackets may follow) + whitespace + a
character that is not lower-case, unless the word before is a known abbreviation, a single
capital initial ("J. Smith") or a list number ("1." after a sentence end or a colon).
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Never end a sentence: titles and Latin/reference abbreviations that precede more text.
NON_FINAL_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft rev gen col lt sgt capt gov sen rep hon "
    "e.g i.e eg ie vs cf approx ca fig figs no nos vol pp ch sec eq est incl".split()
)
# May end a sentence ("... apples, pears, etc. The table ..."): split before a capital.
FINAL_ABBREVIATIONS = frozenset("etc inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec".split())

# Bullets, "1." / "1)" / "(1)", and lower-case letter items "a)" / "a." ("J. Smith" is no item).
_LIST_MARKER = re.compile(r"^\s*(?:[-*+\u2022\u00b7\u2013\u2014>]+|\(?\d{1,3}[.)]|\(?[a-z][.)])(?:\s+|$)")
_MARKDOWN = re.compile(r"(\*\*|__|`+|^#+\s*)")
# An inline list after a colon ("Objects: 1. a cat 2. a dog") starts on its own line.
_INLINE_LIST = re.compile(r"([:;])\s+(?=\(?\d{1,3}[.)]\s)")
# Candidate end: terminal punctuation, optional closers, then whitespace.
_END = re.compile(r"([.!?\u2026]+)([\"'\u201d\u2019)\]]*)(\s+)")


def _word_before(line: str, stop: int) -> str:
    """The whitespace-delimited word that ends at ``stop`` (exclusive), without leading brackets."""
    start = line.rfind(" ", 0, stop) + 1
    return line[start:stop].lstrip("\"'(\u201c\u2018[")


def _is_boundary(line: str, match: re.Match[str]) -> bool:
    after = line[match.end():match.end() + 1]
    if not after or after.islower():
        return False
    punct = match.group(1)
    if punct != ".":  # "!", "?", "..." and mixes always end a sentence before a non-lower char
        return True
    word = _word_before(line, match.start(1))
    lowered = word.lower()
    if lowered in NON_FINAL_ABBREVIATIONS:
        return False
    if lowered in FINAL_ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha() and word.isupper():
        return False  # an initial: "J. Smith"
    if "." in word and all(len(part) <= 2 for part in word.split(".")):
        # dotted acronyms "U.S", "a.m": treat like final abbreviations
        return not after.isdigit()
    if word.isdigit() and len(word) <= 3 and not match.group(2):
        # "1." right after a sentence end / colon / line start is a list number, not an end
        before = line[: match.start(1) - len(word)].rstrip()
        return not (before == "" or before[-1] in ".:;!?")
    return True


def _split_line(line: str) -> list[str]:
    sentences, start = [], 0
    for match in _END.finditer(line):
        if _is_boundary(line, match):
            sentences.append(line[start:match.end(2)])
            start = match.end()
    sentences.append(line[start:])
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
