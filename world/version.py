"""The world generator's fingerprint, part of every world's cache key (``WorldConfig.key``): a
world cached by older generation code is never reused after that code changed; the new code
builds its own ``world-<key>`` folder (``judgefree cache prune`` removes the old one).

The fingerprint hashes the source files of the modules that build a world, so any edit to them
(a comment too: a rebuild is cheaper than a silently stale world) gives a new key."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Bump by hand when code OUTSIDE world/ changes what a build writes (the engine's greedy captions
# in m0_eval.jsonl, the chat template m0 is saved with, the CHAIR scoring world/metric.py
# imports): the source hash below sees world/ only.
REVISION = 1

# The modules whose code decides a built world's files (world/build.py imports them, directly
# or not). Every module of the package is in one of the two lists (a test checks it).
GENERATOR_MODULES = ("build", "clip", "config", "evaluate", "grammar", "metric", "pretrain", "render",
                     "scenes", "seed", "tokenizer", "tower", "vocabulary")
# Modules that read built worlds and never build one.
OTHER_MODULES = ("__init__", "verdicts", "version")

WORLD_DIR = Path(__file__).resolve().parent


def generator_fingerprint(folder: Path | None = None) -> str:
    """sha256 (hex) of REVISION and the generator's sources in ``folder`` (default: this package)."""
    folder = Path(folder) if folder is not None else WORLD_DIR
    digest = hashlib.sha256(f"revision {REVISION}\n".encode())
    for name in GENERATOR_MODULES:
        source = (folder / f"{name}.py").read_bytes()
        digest.update(f"{name}.py {len(source)}\n".encode())
        digest.update(source)
    return digest.hexdigest()
