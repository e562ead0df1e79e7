"""One row of the pair store (``PairRecord``), its Arrow schema, and its construction from an
engine ``Pair``. Plain Python and pyarrow: readable without torch. Schema doc: docs/pair_store.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

import pyarrow as pa

# 1: shards beside manifest.json. 2: shards in pairs/ (a folder that reads as exactly the pairs),
# each with its size and sha256 in the manifest, the model's fingerprint, field descriptions.
SCHEMA_VERSION = 2

_INT_LIST = pa.list_(pa.int32())
# float32: the engine computes log-probs in fp32, so nothing is lost and the store halves.
_FLOAT_LIST = pa.list_(pa.float32())


def _response_fields(role: str) -> list[tuple[str, pa.DataType, str]]:
    which = "the preferred response" if role == "chosen" else "the dispreferred response"
    return [
        (f"{role}_text", pa.string(), f"text of {which}"),
        (f"{role}_token_ids", _INT_LIST, f"token ids of {which}, as generated"),
        (f"{role}_h", pa.float64(), "hallucination ratio h it was sampled with (weight of the image-free path)"),
        (f"{role}_seed", pa.int64(), "its sampling seed"),
        (f"{role}_cond_logprobs", _FLOAT_LIST,
         "log p_cond(token) under the seed model at temperature 1, one per token: the DPO reference log-probs"),
        (f"{role}_logprobs", _FLOAT_LIST, "log-prob of each token under the distribution actually sampled from"),
        (f"{role}_finish_reason", pa.string(), "stop (end of sequence) or length (max_new_tokens reached)"),
        (f"{role}_score", pa.float64(), "curated: CLIP score of the response; null if not scored"),
        (f"{role}_segments", pa.int32(), "curated: number of sentences / sub-sentences scored"),
    ]


_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("pair_id", pa.string(), "sha256(image path + newline + prompt), first 20 hex digits"),
    ("image", pa.string(), "absolute path of the image file"),
    ("image_hash", pa.string(), "the engine's hash of the decoded pixels (prefix caching, seeds)"),
    ("image_sha256", pa.string(), "sha256 of the image file's bytes at generation"),
    ("prompt", pa.string(), "the instruction"),
    ("prompt_token_ids", _INT_LIST,
     "conditional prompt as the engine fed it (chat template applied, image tokens expanded)"),
    *_response_fields("chosen"),
    *_response_fields("rejected"),
    ("score_diff", pa.float64(), "curated: chosen_score - rejected_score (>= 0); null if unscored"),
    ("swapped", pa.bool_(), "curated: true when CLIP preferred the engine's rejected (higher-h) response"),
    ("split", pa.int32(), "curated: 0 (smallest score differences) .. splits-1; null if unscored"),
    ("kept", pa.bool_(), "curated: selected for training"),
]

# The descriptions travel in every shard (Arrow field metadata, kept by Parquet), so a reader
# with pandas or pyarrow alone can tell what a column means.
SCHEMA = pa.schema(
    [pa.field(name, kind, metadata={"description": text}) for name, kind, text in _FIELDS],
    metadata={"judgefree.format": "judgefree-pairs", "judgefree.schema_version": str(SCHEMA_VERSION),
              "judgefree.doc": "docs/pair_store.md"},
)


def describe_columns() -> dict[str, str]:
    """Column name -> its description (as stored in the shards' schema)."""
    return {name: text for name, _, text in _FIELDS}


@dataclass(slots=True)
class PairRecord:
    """A pair as stored. Curation fields (scores, ``swapped``, ``split``, ``kept``) are None
    until ``judgefree curate`` fills them; after curation ``chosen`` is the higher-scoring
    response and ``swapped`` says the engine's order was reversed."""

    pair_id: str
    image: str
    image_hash: str | None
    image_sha256: str
    prompt: str
    prompt_token_ids: list[int]
    chosen_text: str
    chosen_token_ids: list[int]
    chosen_h: float
    chosen_seed: int
    chosen_cond_logprobs: list[float]
    chosen_logprobs: list[float]
    chosen_finish_reason: str
    rejected_text: str
    rejected_token_ids: list[int]
    rejected_h: float
    rejected_seed: int
    rejected_cond_logprobs: list[float]
    rejected_logprobs: list[float]
    rejected_finish_reason: str
    chosen_score: float | None = None
    chosen_segments: int | None = None
    rejected_score: float | None = None
    rejected_segments: int | None = None
    score_diff: float | None = None
    swapped: bool | None = None
    split: int | None = None
    kept: bool | None = None

    def to_row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def swapped_roles(self) -> PairRecord:
        """A copy with chosen and rejected exchanged (scores included), ``swapped`` toggled."""
        row = self.to_row()
        for name in list(row):
            if name.startswith("chosen_"):
                other = "rejected_" + name[len("chosen_"):]
                row[name], row[other] = row[other], row[name]
        row["swapped"] = not bool(self.swapped)
        return PairRecord(**row)


assert {f.name for f in fields(PairRecord)} == set(SCHEMA.names), "PairRecord and SCHEMA disagree"


def pair_id_for(image: str, prompt: str) -> str:
    """Stable id of the pair for one image path and prompt (the resume key)."""
    return hashlib.sha256(f"{image}\n{prompt}".encode()).hexdigest()[:20]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_from_pair(pair: Any, image: str, image_sha256: str) -> PairRecord:
    """Flatten an engine ``Pair`` (see engine/types.py) whose completions both succeeded."""
    chosen, rejected = pair.chosen, pair.rejected
    if chosen.prompt_token_ids and rejected.prompt_token_ids and chosen.prompt_token_ids != rejected.prompt_token_ids:
        raise ValueError(f"pair for {image}: chosen and rejected were generated from different prompt_token_ids")
    values: dict[str, Any] = {}
    for role, completion in (("chosen", chosen), ("rejected", rejected)):
        if len(completion.cond_logprobs) != len(completion.token_ids):
            raise ValueError(f"pair for {image}: {role} has {len(completion.token_ids)} tokens "
                             f"but {len(completion.cond_logprobs)} cond_logprobs")
        values.update({
            f"{role}_text": completion.text,
            f"{role}_token_ids": list(completion.token_ids),
            f"{role}_h": float(completion.h),
            f"{role}_seed": int(completion.seed),
            f"{role}_cond_logprobs": [float(x) for x in completion.cond_logprobs],
            f"{role}_logprobs": [float(x) for x in completion.logprobs],
            f"{role}_finish_reason": completion.finish_reason,
        })
    return PairRecord(
        pair_id=pair_id_for(image, pair.prompt),
        image=image,
        image_hash=pair.image_hash or chosen.image_hash,
        image_sha256=image_sha256,
        prompt=pair.prompt,
        prompt_token_ids=list(chosen.prompt_token_ids or rejected.prompt_token_ids),
        **values,
    )
