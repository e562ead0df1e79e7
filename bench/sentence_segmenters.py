"""Sentence segmenters on a public English sentence-boundary test set (the Golden Rules of the
Pragmatic Segmenter, bench/data/golden_rules_en.json, MIT): exact-match accuracy per case, and
the time to segment the set, methods interleaved, median over rounds.

    .venv/bin/python bench/sentence_segmenters.py [--rounds 20] [--show-failures]

judgefree's ``split_sentences`` strips list markers on purpose ("1. The first item" -> "The
first item"), so it is also scored with leading list markers removed from the expected
sentences. Segmenters that are not installed are listed as such (pip install syntok
blingfire nltk). nltk's Punkt runs untrained: its trained English data is a download that
this machine cannot make. wtpsplit needs model weights from a hub and is not run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

DATA = Path(__file__).parent / "data" / "golden_rules_en.json"
# Leading list markers as the Golden Rules write them: "1.)", "2)", "3.", "a.", "•", "⁃"
_MARKER = re.compile(r"^(?:[\u2022\u2043]\s*)?(?:\d{1,3}\.?\)|\d{1,3}\.|[a-z]\.)\s+")


def _syntok():
    import syntok.segmenter as segmenter

    def split(text: str) -> list[str]:
        return ["".join(t.spacing + t.value for t in sentence) for paragraph in segmenter.process(text)
                for sentence in paragraph]
    return split


def _blingfire():
    import blingfire

    return lambda text: blingfire.text_to_sentences(text).split("\n")


def _punkt_untrained():
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer().tokenize


def _pysbd():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False).segment


def _judgefree():
    from judgefree.curate.sentences import split_sentences

    return split_sentences


SEGMENTERS = {"judgefree split_sentences (pysbd + ours)": _judgefree, "pysbd": _pysbd, "syntok": _syntok,
              "blingfire": _blingfire, "nltk punkt (untrained)": _punkt_untrained}


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    package = {"judgefree split_sentences (pysbd + ours)": "pysbd", "nltk punkt (untrained)": "nltk"}.get(name, name)
    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--show-failures", action="store_true")
    args = parser.parse_args()
    cases = json.loads(DATA.read_text(encoding="utf-8"))["cases"]
    split = {}
    for name, make in SEGMENTERS.items():
        try:
            split[name] = make()
        except ImportError:
            print(f"{name}: not installed")
    rows = {}
    for name, fn in split.items():
        exact, markers, failures = 0, 0, []
        for case in cases:
            got = [s.strip() for s in fn(case["text"]) if s.strip()]
            exact += got == case["sentences"]
            markers += got == [_MARKER.sub("", s) for s in case["sentences"]] or got == case["sentences"]
            if got != case["sentences"]:
                failures.append((case["text"], got))
        rows[name] = [exact, markers, failures, []]
    for _ in range(args.rounds):  # interleaved: every method once per round
        for name, fn in split.items():
            start = time.perf_counter()
            for case in cases:
                fn(case["text"])
            rows[name][3].append(time.perf_counter() - start)
    chars = sum(len(c["text"]) for c in cases)
    print(f"Golden Rules (English), {len(cases)} cases, {chars} characters; load average "
          f"{os.getloadavg()[0]:.2f}; medians of {args.rounds} interleaved rounds")
    print(f"{'segmenter':42} {'version':>8} {'exact':>7} {'markers ok':>11} {'ms / set':>9}")
    for name, (exact, markers, failures, times) in rows.items():
        print(f"{name:42} {_version(name):>8} {exact:>4}/{len(cases)} {markers:>8}/{len(cases)} "
              f"{1e3 * statistics.median(times):>9.2f}")
    if args.show_failures:
        for name, (_, _, failures, _) in rows.items():
            print(f"\n{name}: {len(failures)} not exact")
            for text, got in failures:
                print(f"  {text[:70]!r} -> {got}")


if __name__ == "__main__":
    main()
