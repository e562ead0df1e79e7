"""``Engine.generate_pairs``: two responses per image, seeded so that the result depends only
on (seed, image content, role), never on which chunk or rank generated it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import Any

from judgefree.generation.hdist import HDistribution
from judgefree.images import describe_image, image_content_hash, load_image
from judgefree.engine.types import Completion, Pair, Request, SamplingParams

ROLES = ("chosen", "rejected")  # the roles of the h distributions, before the final ordering


def derive_seed(seed: int, image_key: str, role: str) -> int:
    """A 63-bit response seed from (run seed, image content hash, role)."""
    digest = hashlib.sha256(f"{seed}\x00{image_key}\x00{role}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(slots=True)
class PairPlan:
    prompt: str
    images: list[Any]
    hashes: list[str | None]
    h: list[tuple[float, float]]
    seeds: list[tuple[int, int]]
    requests: list[Request] = field(default_factory=list)
    slots: list[tuple[int, int] | None] = field(default_factory=list)  # request indices per image
    errors: dict[int, str] = field(default_factory=dict)


def build_pair_requests(images: SequenceABC[Any], prompt: str, h_chosen, h_rejected,
                        sampling: SamplingParams, max_new_tokens: int, seed: int) -> PairPlan:
    """Read every image, draw both h values, and build the engine requests (two per
    readable image; unreadable ones are recorded as errors)."""
    if isinstance(images, (str, bytes)) or not isinstance(images, SequenceABC):
        raise ValueError("images must be a list of paths or images")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    dists = (HDistribution.parse(h_chosen), HDistribution.parse(h_rejected))
    plan = PairPlan(prompt, list(images), [], [], [])
    for index, image in enumerate(plan.images):
        try:
            picture = load_image(image)
            image_hash, key = image_content_hash(picture), None
        except ValueError as err:
            picture, image_hash = None, None
            key = f"unreadable:{image!r}"
            plan.errors[index] = str(err)
        seeds = tuple(derive_seed(seed, key or image_hash, role) for role in ROLES)
        hs = tuple(dist.sample(s) for dist, s in zip(dists, seeds))
        plan.hashes.append(image_hash)
        plan.seeds.append(seeds)
        plan.h.append(hs)
        if picture is None:
            plan.slots.append(None)
            continue
        first = len(plan.requests)
        for role, s, h in zip(ROLES, seeds, hs):
            plan.requests.append(Request(prompt, image=picture, h=h, sampling=sampling, seed=s,
                                         max_new_tokens=max_new_tokens, request_id=f"{index}:{role}"))
        plan.slots.append((first, first + 1))
    return plan


def _error_completion(plan: PairPlan, index: int, role_index: int) -> Completion:
    return Completion(f"{index}:{ROLES[role_index]}", plan.prompt, [], "", plan.h[index][role_index],
                      "error", [], [], seed=plan.seeds[index][role_index], image_hash=plan.hashes[index],
                      error=plan.errors[index])


def assemble_pairs(plan: PairPlan, completions: list[Completion]) -> list[Pair]:
    """Pairs in image order; chosen is the lower-h response (ties: the h_chosen one)."""
    pairs = []
    for index, slot in enumerate(plan.slots):
        if slot is None:
            first, second = _error_completion(plan, index, 0), _error_completion(plan, index, 1)
        else:
            first, second = completions[slot[0]], completions[slot[1]]
        chosen, rejected = (second, first) if second.h < first.h else (first, second)
        pairs.append(Pair(describe_image(plan.images[index]), plan.hashes[index], plan.prompt, chosen, rejected))
    return pairs
