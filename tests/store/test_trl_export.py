"""The TRL / datasets export (store/export.py): both styles load with ``datasets``; images by
relative path, absolute path or embedded bytes; the rendered style's rows, its handling of
responses that do not tokenise back, and its clear errors. TRL itself: test_trl_faithful.py."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from judgefree.curate.selection import Selection, select
from judgefree.store.export import EXPORT_FORMAT, export_trl
from judgefree.store.pair_store import StoreWriter
from judgefree.testing.material import make_record, write_store


@pytest.fixture
def image_store(tmp_path, photo_dir):
    """A curated store over copies of real image files: pairs 0..3, the kept ones are 1 and 3."""
    images = []
    for source in sorted(photo_dir.iterdir())[:4]:
        images.append(tmp_path / "images" / source.name)
        images[-1].parent.mkdir(exist_ok=True)
        shutil.copy(source, images[-1])
    records = [make_record(i, s, 0.5) for i, s in enumerate([0.55, 0.9, 0.45, 0.1])]
    for record, image in zip(records, images):
        record.image = str(image)
        record.image_sha256 = ""  # hand-made records: no digest to check
    curated = select(records, Selection(splits=2, keep_splits=(1,)))
    StoreWriter(tmp_path / "store", stage="curated", settings={}).append(curated)
    return tmp_path / "store", images


def _load(path, tmp_path):
    import datasets

    return datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))


@pytest.mark.parametrize("images", ["relative", "absolute", "embed"])
def test_messages_export_loads_with_datasets(tmp_path, image_store, images, monkeypatch, photo_dir):
    store, files = image_store
    out = tmp_path / "trl" / "train.parquet"
    report = export_trl(store, out, style="messages", images=images)
    assert (report.rows, report.inexact) == (2, [])
    import pyarrow.parquet as pq

    stored = pq.read_table(out).column("images").to_pylist()[0][0]
    if images == "relative":
        assert stored == {"bytes": None, "path": os.path.join("..", "images", files[1].name)}
    elif images == "absolute":
        assert stored == {"bytes": None, "path": str(files[1].resolve())}
    else:
        assert stored["bytes"] == files[1].read_bytes() and stored["path"] == files[1].name
        shutil.rmtree(files[1].parent)  # embedded: the file no longer needs the images
    monkeypatch.chdir(out.parent)  # datasets opens relative paths from the working folder
    loaded = _load(out, tmp_path)
    assert loaded.column_names == ["prompt", "chosen", "rejected", "images", "pair_id"]
    row = loaded[0]  # pair 1: chosen 0.9 beats rejected 0.5, no swap
    assert row["pair_id"] == "p1"
    assert [c["type"] for c in row["prompt"][0]["content"]] == ["image", "text"]
    assert row["prompt"][0]["content"][1]["text"] == "Describe."
    assert row["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "chosen 1"}]}]
    assert loaded[1]["chosen"][0]["content"][0]["text"] == "rejected 3"  # pair 3 was swapped
    from PIL import Image

    with Image.open(photo_dir / files[1].name) as original:
        assert row["images"][0].size == original.size


def test_empty_selection_keeps_the_schema(tmp_path):
    import pyarrow.parquet as pq

    unscored = select([make_record(0, None, None)], Selection())
    StoreWriter(tmp_path / "store", stage="curated", settings={}).append(unscored)
    assert export_trl(tmp_path / "store", tmp_path / "none.parquet", style="messages").rows == 0
    table = pq.read_table(tmp_path / "none.parquet")
    assert table.num_rows == 0 and table.schema.names == ["prompt", "chosen", "rejected", "images", "pair_id"]


@pytest.fixture
def engine_store(tmp_path, llava_records):
    """The real engine's pairs; the store's manifest does not name the model, so tests pass it."""
    return write_store(tmp_path / "store", llava_records)


def test_rendered_rows_hold_the_template_the_ids_and_the_recorded_reference(tmp_path, engine_store,
                                                                            llava_records, train_llava_dir):
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    out = tmp_path / "train.parquet"
    report = export_trl(engine_store, out, model=train_llava_dir, inexact="keep")
    assert report.rows == len(llava_records) and report.dropped == 0
    table = pq.read_table(out)
    rows = {row["pair_id"]: row for row in table.to_pylist()}
    tokenizer = AutoTokenizer.from_pretrained(train_llava_dir)
    flagged = {entry["pair_id"] for entry in report.inexact}
    for record in llava_records:
        row = rows[record.pair_id]
        # llava-1.5's template with one placeholder, as a processor expands it again
        assert row["prompt"] == "USER: <image>\nDescribe the image. ASSISTANT:"
        assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == (
            record.prompt_token_ids, record.chosen_token_ids, record.rejected_token_ids)
        assert row["exact"] == (record.pair_id not in flagged)
        if row["exact"]:
            assert tokenizer(row["chosen"], add_special_tokens=False)["input_ids"] == record.chosen_token_ids
            assert row["ref_chosen_logps"] == pytest.approx(sum(record.chosen_cond_logprobs), abs=1e-9)
            assert row["ref_rejected_logps"] == pytest.approx(sum(record.rejected_cond_logprobs), abs=1e-9)
        else:  # the recorded reference belongs to other ids than a trainer would see
            assert row["ref_chosen_logps"] is None and row["ref_rejected_logps"] is None
    assert flagged and len(flagged) < len(llava_records)  # this material has both kinds
    meta = json.loads(pq.read_metadata(out).metadata[EXPORT_FORMAT.encode()])  # file key-value metadata
    assert meta["style"] == "rendered" and meta["inexact"] == report.inexact
    assert meta["model"] == str(train_llava_dir)


def test_inexact_pairs_are_dropped_by_default_or_stop_the_export(tmp_path, engine_store, train_llava_dir):
    import pyarrow.parquet as pq

    kept = export_trl(engine_store, tmp_path / "keep.parquet", model=train_llava_dir, inexact="keep")
    dropped = export_trl(engine_store, tmp_path / "drop.parquet", model=train_llava_dir)
    assert dropped.inexact == kept.inexact and dropped.dropped == len(kept.inexact)
    assert dropped.rows == kept.rows - len(kept.inexact)
    assert all(pq.read_table(tmp_path / "drop.parquet").column("exact").to_pylist())
    assert "left out" in dropped.describe()
    with pytest.raises(ValueError, match=f"pair {kept.inexact[0]['pair_id']}: the .* response's text"):
        export_trl(engine_store, tmp_path / "error.parquet", model=train_llava_dir, inexact="error")
    assert not (tmp_path / "error.parquet").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file is removed


def test_rendered_export_needs_the_generating_model(tmp_path, engine_store, tiny_llama_dir, train_llava_dir,
                                                    llava_records):
    with pytest.raises(ValueError, match="does not record its model"):
        export_trl(engine_store, tmp_path / "a.parquet")
    with pytest.raises(FileNotFoundError, match="model folder /nowhere"):
        export_trl(engine_store, tmp_path / "a.parquet", model="/nowhere")
    with pytest.raises(ValueError, match="no image tokens"):  # a text model's tokenizer
        export_trl(engine_store, tmp_path / "a.parquet", model=tiny_llama_dir)
    # the model recorded by generation is found without model=
    generated = StoreWriter(tmp_path / "gen", stage="generated", settings={"model": str(train_llava_dir)})
    generated.append(llava_records)
    assert export_trl(tmp_path / "gen", tmp_path / "b.parquet").model == str(train_llava_dir)


def test_a_changed_or_missing_image_is_a_clear_error(tmp_path, llava_records, train_llava_dir):
    records = []
    for index, record in enumerate(llava_records[:2]):
        copy = tmp_path / f"image{index}.png"
        shutil.copy(record.image, copy)
        records.append(dataclasses.replace(record, image=str(copy)))
    store = write_store(tmp_path / "store", records)
    (tmp_path / "image0.png").write_bytes((tmp_path / "image1.png").read_bytes())
    with pytest.raises(ValueError, match="changed since the pair was generated"):
        export_trl(store, tmp_path / "a.parquet", model=train_llava_dir, inexact="keep")
    (tmp_path / "image0.png").unlink()
    with pytest.raises(FileNotFoundError, match="image0.png not found"):
        export_trl(store, tmp_path / "a.parquet", style="messages")


def test_bad_options_are_named(tmp_path, engine_store):
    for option, value in (("style", "chatml"), ("images", "copy"), ("inexact", "ignore")):
        with pytest.raises(ValueError, match=f"{option} must be one of"):
            export_trl(engine_store, tmp_path / "a.parquet", **{option: value})
