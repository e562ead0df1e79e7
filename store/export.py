"""Export a pair store as a preference dataset that TRL's DPOTrainer and ``datasets`` read.

One Parquet file (``datasets.load_dataset("parquet", data_files=...)`` loads it with its
image feature). Two styles (docs/trl_export.md):

* ``rendered`` (default): ``prompt`` is the prompt exactly as the engine fed it, chat template
  and ``<image>`` placeholder included; ``chosen`` / ``rejected`` are the responses decoded with
  their special tokens (EOS included). Fed to DPOTrainer unchanged, TRL tokenises them back to
  exactly the stored token ids: every row is checked at export, and a pair whose response text
  would tokenise to other ids (a sampled non-canonical split) is left out and reported
  (``inexact="drop"``), kept and flagged (``"keep"``), or stops the export (``"error"``).
  The stored ids and the summed recorded reference log-probs ride along (``prompt_ids``,
  ``chosen_ids``, ``rejected_ids``, ``ref_chosen_logps``, ``ref_rejected_logps``).
* ``messages``: conversational messages (the layout of trl-lib/rlaif-v), for tools that apply
  a chat template themselves. Not token-exact: TRL re-renders it through the template.

Images: ``relative`` paths (relative to the export file's folder, so the file and the images
can move together), ``absolute`` paths, or ``embed`` (the image bytes inside the file).
The file is written in row groups to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judgefree.store.pair_store import PairStore
from judgefree.store.records import PairRecord

STYLES = ("rendered", "messages")
IMAGE_MODES = ("relative", "absolute", "embed")
INEXACT_POLICIES = ("drop", "keep", "error")
EXPORT_FORMAT = "judgefree-trl-export"
_ROW_GROUP = 256


@dataclass(slots=True)
class ExportReport:
    """What ``export_trl`` wrote: rows, and the pairs whose responses are not token-exact."""

    path: Path
    rows: int
    style: str
    images: str
    inexact: list[dict[str, Any]] = field(default_factory=list)  # [{"pair_id", "roles"}]
    dropped: int = 0
    model: str | None = None

    def describe(self) -> str:
        where = {"relative": f"image paths relative to {self.path.parent}", "absolute": "absolute image paths",
                 "embed": "images embedded"}[self.images]
        exact = "token-exact" if self.style == "rendered" else "not token-exact (TRL re-renders messages)"
        lines = [f"TRL export: {self.rows} pairs -> {self.path} ({self.style}, {exact}; {where})"]
        if self.inexact:
            verb = "left out" if self.dropped else "kept, flagged exact=false"
            lines.append(f"  {len(self.inexact)} pairs {verb}: a response's text tokenises to other ids than "
                         "the generated ones (a non-canonical split); see --export-inexact")
        return "\n".join(lines)


def _model_folder(store: PairStore) -> str | None:
    """The model folder a store was generated with (a curated store keeps its generation settings)."""
    for settings in (store.settings, store.settings.get("generation") or {}):
        model = settings.get("model") if isinstance(settings, dict) else None
        if isinstance(model, dict):  # a richer model record: its folder is under "path"
            model = model.get("path")
        if isinstance(model, str) and model:
            return model
    return None


def export_model_folder(store: PairStore, model: str | Path | None = None) -> str:
    """The folder whose processor renders the export: ``model``, else the one the store records;
    an error naming the fix when neither is a folder here."""
    folder = str(model) if model is not None else _model_folder(store)
    if folder is None:
        raise ValueError(f"{store.path} does not record its model: pass model= (--export-model DIR), the "
                         "folder whose tokenizer and processor generated the pairs")
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"model folder {folder} (the tokenizer of the rendered export) not found: "
                                "pass model= (--export-model DIR) with the model the pairs were generated with")
    return folder


def _features(style: str) -> Any:
    from datasets import Features, Image, List, Value

    images = List(Image())
    if style == "messages":
        message = List({"role": Value("string"),
                        "content": List({"type": Value("string"), "text": Value("string")})})
        return Features({"prompt": message, "chosen": message, "rejected": message, "images": images,
                         "pair_id": Value("string")})
    ids = List(Value("int32"))
    return Features({
        "prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"), "images": images,
        "pair_id": Value("string"), "prompt_ids": ids, "chosen_ids": ids, "rejected_ids": ids,
        "ref_chosen_logps": Value("float64"), "ref_rejected_logps": Value("float64"), "exact": Value("bool"),
    })


def _messages(record: PairRecord) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                {"type": "text", "text": record.prompt}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": record.chosen_text}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": record.rejected_text}]}],
    }


def _reference_sum(logprobs: list[float], token_ids: list[int]) -> float | None:
    if not logprobs or len(logprobs) != len(token_ids):
        return None
    total = float(sum(logprobs))
    return total if total == total and abs(total) != float("inf") else None


def _image_value(record: PairRecord, images: str, base: Path) -> dict[str, Any]:
    path = Path(record.image)
    if not path.is_file():
        raise FileNotFoundError(f"pair {record.pair_id}: image {path} not found (the export needs the images)")
    data = path.read_bytes()
    if record.image_sha256 and hashlib.sha256(data).hexdigest() != record.image_sha256:
        raise ValueError(f"pair {record.pair_id}: image {path} changed since the pair was generated")
    if images == "embed":
        return {"bytes": data, "path": path.name}
    if images == "absolute":
        return {"bytes": None, "path": str(path.resolve())}
    return {"bytes": None, "path": os.path.relpath(path.resolve(), base)}


def _rendered_rows(records: list[PairRecord], token_text, inexact: str,
                   report: ExportReport) -> Iterator[tuple[PairRecord, dict[str, Any]]]:
    texts = token_text.response_texts([ids for r in records for ids in (r.chosen_token_ids, r.rejected_token_ids)])
    for index, record in enumerate(records):
        (chosen, chosen_exact), (rejected, rejected_exact) = texts[2 * index], texts[2 * index + 1]
        exact = chosen_exact and rejected_exact
        if not exact:
            roles = [role for role, ok in (("chosen", chosen_exact), ("rejected", rejected_exact)) if not ok]
            if inexact == "error":
                raise ValueError(f"pair {record.pair_id}: the {' and '.join(roles)} response's text does not "
                                 "tokenise back to the generated ids (export with inexact='drop' or 'keep')")
            report.inexact.append({"pair_id": record.pair_id, "roles": roles})
            if inexact == "drop":
                report.dropped += 1
                continue
        yield record, {
            "prompt": token_text.prompt_text(record.prompt_token_ids), "chosen": chosen, "rejected": rejected,
            "prompt_ids": record.prompt_token_ids, "chosen_ids": record.chosen_token_ids,
            "rejected_ids": record.rejected_token_ids,
            # the recorded reference is of the generated ids: it says nothing about another tokenisation
            "ref_chosen_logps": _reference_sum(record.chosen_cond_logprobs, record.chosen_token_ids) if exact else None,
            "ref_rejected_logps": (_reference_sum(record.rejected_cond_logprobs, record.rejected_token_ids)
                                   if exact else None),
            "exact": exact,
        }


def _batches(records: Iterator[PairRecord]) -> Iterator[list[PairRecord]]:
    batch: list[PairRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) == _ROW_GROUP:
            yield batch
            batch = []
    if batch:
        yield batch


def export_trl(store: str | Path | PairStore, out: str | Path, *, kept_only: bool | None = None,
               style: str = "rendered", images: str = "relative", model: str | Path | None = None,
               inexact: str = "drop") -> ExportReport:
    """Write the store's pairs as a TRL / ``datasets`` DPO Parquet file at ``out`` (module doc).

    ``kept_only=None`` takes the kept pairs of a curated store and every pair of a generated one.
    ``model``: the folder whose processor generated the pairs (default: the one the store
    records); only the rendered style needs it.
    """
    for name, value, allowed in (("style", style, STYLES), ("images", images, IMAGE_MODES),
                                 ("inexact", inexact, INEXACT_POLICIES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from datasets import Features  # noqa: F401  (an optional dependency: only the export needs it)
    except ImportError as err:
        raise ImportError("export_trl needs the `datasets` package (pip install datasets)") from err
    store = store if isinstance(store, PairStore) else PairStore(store)
    if kept_only is None:
        kept_only = store.stage == "curated"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    token_text, folder = None, None
    if style == "rendered":
        from judgefree.store.token_text import TokenText

        folder = export_model_folder(store, model)
        token_text = TokenText.from_pretrained(folder)
    report = ExportReport(out, 0, style, images, model=folder)
    features = _features(style)
    schema = features.arrow_schema
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    checked_prompts: set[tuple[int, ...]] = set()
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in _batches(store.records(kept_only=kept_only)):
                if token_text is None:
                    pairs = ((record, _messages(record)) for record in batch)
                else:
                    pairs = _rendered_rows(batch, token_text, inexact, report)
                rows = []
                for record, row in pairs:
                    image = _image_value(record, images, base)
                    key = tuple(record.prompt_token_ids)
                    if token_text is not None and key not in checked_prompts:
                        from PIL import Image

                        with Image.open(record.image) as picture:
                            token_text.check_image_expansion(record.prompt_token_ids, picture.convert("RGB"))
                        checked_prompts.add(key)
                    rows.append(features.encode_example({**row, "images": [image], "pair_id": record.pair_id}))
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    report.rows += len(rows)
            writer.add_key_value_metadata({EXPORT_FORMAT: json.dumps({
                "style": style, "images": images, "model": folder, "source": str(store.path.resolve()),
                "inexact_policy": inexact, "inexact": report.inexact})})
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return report
