"""DPO examples from a pair store, their order over steps, and padded batches.

A sequence is the stored ``prompt_token_ids`` followed by the response's token ids, exactly
as the engine generated them; the hidden state at position t predicts token t + 1, so the
last response token is never fed and ``targets`` marks the response positions only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from judgefree.store.records import PairRecord
from judgefree.store.pair_store import PairStore
from judgefree.train.distributed import shard_bounds

IGNORE_INDEX = -100


@dataclass(slots=True)
class DPOExample:
    """One pair to train on; ``*_ref`` are per-token reference log-probs (None: not known)."""

    pair_id: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_ref: list[float] | None
    rejected_ref: list[float] | None
    image: str | None = None
    image_sha256: str | None = None  # the image's bytes when the pair was generated


@dataclass(slots=True)
class DPOBatch:
    """Rows 0..B-1 are the chosen responses, rows B..2B-1 the rejected ones (same pair order)."""

    input_ids: torch.Tensor  # [2B, T]
    attention_mask: torch.Tensor  # [2B, T]
    targets: torch.Tensor  # [2B, T], IGNORE_INDEX outside response positions
    ref_chosen: torch.Tensor | None  # [B] summed reference log-probs
    ref_rejected: torch.Tensor | None
    pixel_values: torch.Tensor | None  # [B, 3, H, W]: one image per pair, shared by both rows
    pair_ids: list[str]

    @property
    def num_pairs(self) -> int:
        return len(self.pair_ids)

    @property
    def num_tokens(self) -> int:
        """Tokens fed to the model (padding excluded)."""
        return int(self.attention_mask.sum())

    def to(self, device: torch.device) -> DPOBatch:
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return DPOBatch(move(self.input_ids), move(self.attention_mask), move(self.targets),
                        move(self.ref_chosen), move(self.ref_rejected), move(self.pixel_values), self.pair_ids)


def _reference(record: PairRecord, role: str) -> list[float] | None:
    """The stored per-token reference log-probs, or None when missing, short or not finite."""
    values = getattr(record, f"{role}_cond_logprobs")
    tokens = getattr(record, f"{role}_token_ids")
    if not values or len(values) != len(tokens) or not all(math.isfinite(v) for v in values):
        return None
    return list(values)


def load_examples(store: str | Path | PairStore, *, kept_only: bool = True) -> tuple[list[DPOExample], list[dict]]:
    """The pairs to train on and the ones left out (``[{"pair_id", "reason"}]``).

    A curated store gives its kept pairs (``kept_only``) or every pair curation verified,
    whatever its split (``kept_only=False``); a pair curation dropped (no split: an empty
    response, an unreadable image, or CLIP's disagreement under ``on_disagreement="drop"``) is
    never trained on: it is left out with its reason. A generated store is accepted only with
    ``kept_only=False`` (its pairs were never verified). ``store``: a folder or an open store.
    """
    store = store if isinstance(store, PairStore) else PairStore(store)
    if store.stage != "curated" and kept_only:
        raise ValueError(f"{store.path} is a '{store.stage}' store: train on a curated store "
                         "(`judgefree curate`), or pass kept_only=False to use every pair")
    records = store.records(kept_only=kept_only and store.stage == "curated")
    examples, skipped = [], []
    for record in records:
        if store.stage == "curated" and record.split is None:
            skipped.append({"pair_id": record.pair_id, "reason": f"dropped by curation: {_drop_reason(record)}"})
            continue
        if not record.prompt_token_ids:
            skipped.append({"pair_id": record.pair_id, "reason": "no prompt_token_ids"})
            continue
        if not record.chosen_token_ids or not record.rejected_token_ids:
            skipped.append({"pair_id": record.pair_id, "reason": "a response has no tokens"})
            continue
        examples.append(DPOExample(
            pair_id=record.pair_id, prompt_ids=list(record.prompt_token_ids),
            chosen_ids=list(record.chosen_token_ids), rejected_ids=list(record.rejected_token_ids),
            chosen_ref=_reference(record, "chosen"), rejected_ref=_reference(record, "rejected"),
            image=record.image or None, image_sha256=record.image_sha256 or None,
        ))
    if not examples:
        raise ValueError(f"{store.path} holds no pair to train on ({len(skipped)} left out)")
    return examples, skipped


def _drop_reason(record: PairRecord) -> str:
    from judgefree.curate.selection import empty_sides

    sides = empty_sides(record)
    if sides:
        return f"the {' and '.join(sides)} response{'s are' if len(sides) > 1 else ' is'} empty"
    if record.score_diff is None:
        return "not scored"
    return "CLIP disagreed with the h order"


def check_images_unchanged(examples: list[DPOExample]) -> None:
    """Every image must still be the file the pair was generated from: its reference log-probs
    were computed on those pixels, and training on another picture would pair them wrongly."""
    from judgefree.store.records import file_sha256

    seen: dict[str, str] = {}
    for e in examples:
        if not e.image or not e.image_sha256 or e.image in seen:
            continue
        try:
            seen[e.image] = file_sha256(e.image)
        except OSError as err:
            raise FileNotFoundError(f"image {e.image} of pair {e.pair_id} cannot be read: {err}") from None
        if seen[e.image] != e.image_sha256:
            raise ValueError(f"image {e.image} changed since pair {e.pair_id} was generated (sha256 "
                             f"{seen[e.image][:12]}... != {e.image_sha256[:12]}...): regenerate the pairs")


def examples_digest(examples: list[DPOExample]) -> str:
    """Content hash of the training pairs (ids, image, token ids, stored reference log-probs):
    a resumed or finished run is reused only for the very same data."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.pair_id, e.image, e.image_sha256, e.prompt_ids, e.chosen_ids, e.rejected_ids,
                                  e.chosen_ref, e.rejected_ref]).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Which pairs each optimizer step sees: a fresh permutation per epoch (seeded), cut into
    ``batch_size`` pairs (the incomplete tail of an epoch is dropped)."""

    num_examples: int
    batch_size: int
    epochs: int
    seed: int
    max_steps: int | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.epochs
        return total if self.max_steps is None else min(total, self.max_steps)

    def indices(self, step: int, rank: int = 0, world_size: int = 1) -> list[int]:
        """Example indices of global step ``step`` (0-based) given to ``rank``."""
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step {step} outside [0, {self.total_steps})")
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(self.seed + epoch))
        batch = order[offset * self.batch_size:(offset + 1) * self.batch_size].tolist()
        start, stop = shard_bounds(len(batch), rank, world_size)
        return batch[start:stop]


def collate(examples: list[DPOExample], pad_id: int,
            pixels: Callable[[str], torch.Tensor] | None = None) -> DPOBatch:
    """Right-padded chosen rows then rejected rows; ``pixels(path)`` -> [3, H, W] for LLaVA."""
    if not examples:
        raise ValueError("collate needs at least one example")
    rows = [(e.prompt_ids, e.chosen_ids) for e in examples] + [(e.prompt_ids, e.rejected_ids) for e in examples]
    width = max(len(p) + len(r) - 1 for p, r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (prompt, response) in enumerate(rows):
        fed = prompt + response[:-1]
        input_ids[i, :len(fed)] = torch.tensor(fed)
        attention_mask[i, :len(fed)] = 1
        targets[i, len(prompt) - 1:len(fed)] = torch.tensor(response)
    ref_chosen = ref_rejected = None
    if all(e.chosen_ref is not None and e.rejected_ref is not None for e in examples):
        ref_chosen = torch.tensor([math.fsum(e.chosen_ref) for e in examples], dtype=torch.float32)
        ref_rejected = torch.tensor([math.fsum(e.rejected_ref) for e in examples], dtype=torch.float32)
    pixel_values = None
    if pixels is not None:
        missing = [e.pair_id for e in examples if not e.image]
        if missing:
            raise ValueError(f"pair {missing[0]} has no image, but the model needs one")
        pixel_values = torch.stack([pixels(e.image) for e in examples])
    return DPOBatch(input_ids, attention_mask, targets, ref_chosen, ref_rejected, pixel_values,
                    [e.pair_id for e in examples])


def micro_batches(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
