"""Reference log-probs for pairs whose store lacks them: computed once, saved beside the store.

The engine records every response's log p_cond under the model that generated it, which is
the DPO reference, so normally nothing runs here. A store without them (written by another
tool, or with log-probs that do not match the tokens) gets one no-grad pass of the initial
model; the results go to ``STORE/reference_logprobs.parquet`` (written atomically), keyed by
the sequence's content and its image and tagged with the model's fingerprint, and are reused
next time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from judgefree.io import read_parquet, write_atomic
from judgefree.train.data import DPOExample

REFERENCE_FILE = "reference_logprobs.parquet"
_SCHEMA = pa.schema([("key", pa.string()), ("logprobs", pa.list_(pa.float32()))])
# Tokens scored for a list of examples: [(chosen log-probs, rejected log-probs), ...].
Scorer = Callable[[list[DPOExample]], list[tuple[list[float], list[float]]]]


def sequence_key(prompt_ids: list[int], response_ids: list[int], image: str | None = None) -> str:
    """Content key of one scored sequence (a swap of chosen and rejected keeps the keys).
    ``image`` (its sha256, else its path) is part of it: LLaVA prompts of different images have
    the same ids (the image is a run of placeholders), so equal responses must not share a key."""
    digest = hashlib.sha256(json.dumps([image, prompt_ids, response_ids]).encode())
    return digest.hexdigest()[:32]


def model_fingerprint(folder: str | Path) -> str:
    """Identity of a checkpoint folder: its config and the full bytes of every weight file
    (``judgefree.fingerprint``). Only computed when a store lacks reference log-probs, next to
    a forward pass over every pair, so reading the weights once costs little."""
    from judgefree.fingerprint import model_fingerprint as fingerprint

    return fingerprint(folder)["digest"]


def missing(examples: list[DPOExample]) -> list[int]:
    """Indices of examples without usable reference log-probs."""
    return [i for i, e in enumerate(examples) if e.chosen_ref is None or e.rejected_ref is None]


def _load(path: Path, fingerprint: str) -> dict[str, list[float]]:
    if not path.is_file():
        return {}
    table = read_parquet(path)
    meta = table.schema.metadata or {}
    if meta.get(b"model_fingerprint", b"").decode() != fingerprint:
        return {}  # computed with another model: useless as this run's reference
    return dict(zip(table["key"].to_pylist(), table["logprobs"].to_pylist()))


def _save(path: Path, entries: dict[str, list[float]], fingerprint: str, model: str) -> None:
    table = pa.Table.from_pydict({"key": list(entries), "logprobs": list(entries.values())}, schema=_SCHEMA)
    table = table.replace_schema_metadata({"model_fingerprint": fingerprint, "model": model})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_atomic(path, sink.getvalue().to_pybytes())


def fill_reference(examples: list[DPOExample], store_path: str | Path, model_folder: str | Path,
                   score: Scorer, *, write: bool = True) -> int:
    """Give every example reference log-probs: from the store, else the sidecar file, else
    ``score`` (run once, then saved when ``write``). Returns how many were computed now."""
    todo = missing(examples)
    if not todo:
        return 0
    path = Path(store_path) / REFERENCE_FILE
    fingerprint = model_fingerprint(model_folder)
    saved = _load(path, fingerprint)

    def key(e: DPOExample, role: str) -> str:
        return sequence_key(e.prompt_ids, e.chosen_ids if role == "chosen" else e.rejected_ids,
                            e.image_sha256 or e.image)

    unknown = [i for i in todo if key(examples[i], "chosen") not in saved or key(examples[i], "rejected") not in saved]
    if unknown:
        scored = score([examples[i] for i in unknown])
        if len(scored) != len(unknown):
            raise RuntimeError(f"reference scorer returned {len(scored)} results for {len(unknown)} pairs")
        for i, (chosen, rejected) in zip(unknown, scored):
            e = examples[i]
            if len(chosen) != len(e.chosen_ids) or len(rejected) != len(e.rejected_ids):
                raise RuntimeError(f"reference scorer returned the wrong number of log-probs for pair {e.pair_id}")
            saved[key(e, "chosen")], saved[key(e, "rejected")] = list(chosen), list(rejected)
        if write:
            _save(path, saved, fingerprint, str(Path(model_folder).resolve()))
    for i in todo:
        e = examples[i]
        e.chosen_ref, e.rejected_ref = saved[key(e, "chosen")], saved[key(e, "rejected")]
    return len(unknown)


def policy_scorer(policy, pad_id: int, pixels, ctx, micro_batch_size: int) -> Scorer:
    """A ``Scorer`` running ``policy`` (a ``ResponseLogprobs``) without gradients; under torchrun
    every rank scores a contiguous share and the results are gathered."""
    import torch

    from judgefree.train.data import IGNORE_INDEX, collate
    from judgefree.train.distributed import all_gather_objects

    def score(todo: list[DPOExample]) -> list[tuple[list[float], list[float]]]:
        per_rank = -(-len(todo) // ctx.world_size)
        mine = list(range(ctx.rank * per_rank, min(len(todo), (ctx.rank + 1) * per_rank)))
        results: dict[int, tuple[list[float], list[float]]] = {}
        policy.eval()
        with torch.no_grad():
            for begin in range(0, per_rank, micro_batch_size):
                # Every rank runs the same number of forwards (FSDP2 gathers weights in each);
                # a rank past the end of its share scores example 0 again and drops the result.
                chunk = mine[begin:begin + micro_batch_size]
                batch = collate([todo[i] for i in chunk or [0]], pad_id, pixels).to(ctx.device)
                token = policy(batch.input_ids, batch.attention_mask, batch.targets, batch.pixel_values).cpu()
                mask = batch.targets.cpu() != IGNORE_INDEX
                n = len(chunk)
                for row, i in enumerate(chunk):
                    results[i] = (token[row][mask[row]].tolist(), token[row + n][mask[row + n]].tolist())
        merged: dict[int, tuple[list[float], list[float]]] = {}
        for part in all_gather_objects(results, ctx):
            merged.update(part)
        return [merged[i] for i in range(len(todo))]

    return score
