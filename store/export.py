"""Export a pair store to the preference format that TRL's DPOTrainer and ``datasets`` read:
columns ``prompt``, ``chosen``, ``rejected`` (conversational messages, as trl-lib/rlaif-v) and
``images`` (a list holding the pair's image), written as one Parquet file that
``datasets.load_dataset("parquet", data_files=...)`` loads with its image feature.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from judgefree.store.records import PairRecord
from judgefree.store.pair_store import PairStore


def _messages(record: PairRecord, conversational: bool) -> dict[str, Any]:
    if not conversational:
        return {"prompt": record.prompt, "chosen": record.chosen_text, "rejected": record.rejected_text}
    return {
        "prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                {"type": "text", "text": record.prompt}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": record.chosen_text}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": record.rejected_text}]}],
    }


def _features(conversational: bool) -> Any:
    from datasets import Features, Image, List, Value

    if not conversational:
        text = Value("string")
        return Features({"prompt": text, "chosen": text, "rejected": text, "images": List(Image())})
    message = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
    return Features({"prompt": message, "chosen": message, "rejected": message, "images": List(Image())})


def trl_rows(records: Iterator[PairRecord], *, conversational: bool = True,
             embed_images: bool = False) -> Iterator[dict[str, Any]]:
    """One TRL preference row per record; images as paths, or as bytes with ``embed_images``."""
    for record in records:
        image: Any = record.image
        if embed_images:
            image = {"bytes": Path(record.image).read_bytes(), "path": Path(record.image).name}
        yield {**_messages(record, conversational), "images": [image]}


def export_trl(store: str | Path | PairStore, out: str | Path, *, kept_only: bool | None = None,
               conversational: bool = True, embed_images: bool = False) -> int:
    """Write the store's pairs as a TRL/``datasets`` DPO Parquet file at ``out``; returns the row count.

    ``kept_only=None`` takes the kept pairs of a curated store and every pair of a generated one.
    """
    try:
        from datasets import Dataset
    except ImportError as err:  # an optional dependency: only the export needs it
        raise ImportError("export_trl needs the `datasets` package (pip install datasets)") from err
    store = store if isinstance(store, PairStore) else PairStore(store)
    if kept_only is None:
        kept_only = store.stage == "curated"
    rows = list(trl_rows(store.records(kept_only=kept_only), conversational=conversational, embed_images=embed_images))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    features = _features(conversational)
    # column-wise, so that an empty selection still gives a file with the right schema
    dataset = Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)
    tmp = out.with_name(f".{out.name}.tmp")
    dataset.to_parquet(str(tmp))
    tmp.replace(out)
    return len(rows)
