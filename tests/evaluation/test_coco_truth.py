"""Ground truth from COCO instance annotations plus objects named in reference captions."""

from __future__ import annotations

import json
import os

import pytest

from judgefree.evaluation import coco_truth
from judgefree.evaluation.coco_truth import load_ground_truth, normalize_image_id
from judgefree.evaluation.vocabulary import load_vocabulary


def test_instances_plus_reference_caption_objects(coco_dir):
    truth = load_ground_truth(coco_dir, {1, 2, 3, 4, 5}, load_vocabulary())
    assert truth == {
        1: {"person", "dog"},  # instances (and the caption's man/dog add nothing new)
        2: {"teddy bear", "chair"},  # no reference caption
        3: {"car", "fire hydrant"},  # fire hydrant only from the caption
        4: {"dining table"},  # no instances; "table" in its caption
        5: {"toilet"},
    }


def test_train_and_val_files_are_both_read(coco_dir):
    extra = {"images": [{"id": 7}], "categories": [{"id": 17, "name": "cat"}],
             "annotations": [{"id": 0, "image_id": 7, "category_id": 17}]}
    (coco_dir / "instances_train2014.json").write_text(json.dumps(extra))
    (coco_dir / "captions_train2014.json").write_text(json.dumps(
        {"images": [{"id": 7}], "annotations": [{"id": 0, "image_id": 7, "caption": "A cat on a couch."}]}))
    assert load_ground_truth(coco_dir, {7, 1}, load_vocabulary()) == {7: {"cat", "couch"}, 1: {"person", "dog"}}


def test_unknown_images_and_bad_folders(coco_dir, tmp_path):
    vocab = load_vocabulary()
    with pytest.raises(ValueError, match="2 image id.*not in the COCO annotations: 8, 9"):
        load_ground_truth(coco_dir, {1, 8, 9}, vocab)
    with pytest.raises(NotADirectoryError, match="--coco-annotations"):
        load_ground_truth(tmp_path / "nowhere", {1}, vocab)
    (coco_dir / "captions_val2014.json").unlink()
    with pytest.raises(FileNotFoundError, match="captions_"):
        load_ground_truth(coco_dir, {1}, vocab)
    (coco_dir / "captions_val2014.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_ground_truth(coco_dir, {1}, vocab)


def test_category_missing_from_the_synonym_table(coco_dir):
    path = coco_dir / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["categories"].append({"id": 99, "name": "spaceship"})
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'spaceship' is not in the synonym table"):
        load_ground_truth(coco_dir, {1}, load_vocabulary())


def test_cache_is_used_and_invalidated(coco_dir, tmp_path, monkeypatch):
    vocab, cache = load_vocabulary(), tmp_path / "gt.json"
    first = load_ground_truth(coco_dir, {1, 3}, vocab, cache)
    calls = []
    real_collect = coco_truth._collect
    monkeypatch.setattr(coco_truth, "_collect", lambda *a: calls.append(a[2]) or real_collect(*a))
    assert load_ground_truth(coco_dir, {1, 3}, vocab, cache) == first
    assert calls == []  # served from the cache
    load_ground_truth(coco_dir, {1, 4}, vocab, cache)
    assert calls == [{4}]  # only the image the cache lacks
    # Changing an annotation file invalidates the whole cache.
    path = coco_dir / "instances_val2014.json"
    path.write_text(path.read_text() + " ")
    os.utime(path, ns=(1, 1))
    load_ground_truth(coco_dir, {1}, vocab, cache)
    assert calls[-1] == {1}
    cache.write_text("{broken")
    assert load_ground_truth(coco_dir, {1}, vocab, cache) == {1: {"person", "dog"}}


@pytest.mark.parametrize("value, expected", [
    (42, 42), ("42", 42), ("COCO_val2014_000000391895.jpg", 391895), ("000000000139", 139),
])
def test_normalize_image_id(value, expected):
    assert normalize_image_id(value) == expected


@pytest.mark.parametrize("value", [True, None, "cat", 4.5])
def test_normalize_image_id_rejects(value):
    with pytest.raises(ValueError, match="image_id"):
        normalize_image_id(value)
