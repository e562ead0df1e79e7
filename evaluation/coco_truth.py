"""Ground-truth objects per COCO image, as CHAIR defines them: the classes of the image's
instance annotations plus every COCO object named in its reference captions.

Reads ``instances_*.json`` and ``captions_*.json`` (e.g. the train2014 and val2014 files) from
one annotations folder. Those files are large, so an optional JSON cache keeps the objects of
the images already looked up; it is keyed by the files' names, sizes and mtimes and by the
vocabulary, and rebuilt when any of them changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

from judgefree.evaluation.caption_objects import caption_mentions
from judgefree.io import write_json_atomic
from judgefree.evaluation.vocabulary import CocoVocabulary

CACHE_VERSION = 1
_TRAILING_DIGITS = re.compile(r"(\d+)(?:\.\w+)?$")


def normalize_image_id(value: object) -> int:
    """A COCO image id from an int, a numeric string or a file name like
    ``COCO_val2014_000000391895.jpg``."""
    if isinstance(value, bool):
        raise ValueError(f"image_id must be a COCO image id, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _TRAILING_DIGITS.search(value.strip())
        if match:
            return int(match.group(1))
    raise ValueError(f"image_id must be a COCO image id (a number), got {value!r}")


def annotation_files(annotations_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """The instances and captions files of ``annotations_dir``; both kinds are required."""
    folder = Path(annotations_dir)
    if not folder.is_dir():
        raise NotADirectoryError(f"--coco-annotations is not a folder: {folder}")
    instances = sorted(folder.glob("instances_*.json"))
    captions = sorted(folder.glob("captions_*.json"))
    if not instances:
        raise FileNotFoundError(f"no instances_*.json (COCO instance annotations) in {folder}")
    if not captions:
        raise FileNotFoundError(f"no captions_*.json (COCO reference captions) in {folder}")
    return instances, captions


def load_ground_truth(
    annotations_dir: str | Path,
    image_ids: Iterable[int],
    vocabulary: CocoVocabulary,
    cache_path: str | Path | None = None,
) -> dict[int, frozenset[str]]:
    """COCO classes present in each of ``image_ids``; ValueError for ids the files lack."""
    wanted = set(image_ids)
    instances, captions = annotation_files(annotations_dir)
    key = _cache_key(instances + captions, vocabulary)
    cached = _read_cache(cache_path, key)
    missing = wanted - cached.keys()
    if missing:
        fresh = _collect(instances, captions, missing, vocabulary)
        cached.update(fresh)
        if cache_path is not None:
            write_json_atomic(cache_path, {"version": CACHE_VERSION, "key": key,
                                           "objects": {str(i): sorted(o) for i, o in cached.items()}})
    return {image_id: cached[image_id] for image_id in wanted}


def _collect(instances: list[Path], captions: list[Path], wanted: set[int],
             vocabulary: CocoVocabulary) -> dict[int, frozenset[str]]:
    objects: dict[int, set[str]] = {}
    for path in instances:
        data = _load(path)
        category_to_class = {}
        for category in data.get("categories", []):
            cls = vocabulary.class_of(str(category["name"]).lower())
            if cls is None:
                raise ValueError(f"{path.name}: COCO category {category['name']!r} is not in the synonym table")
            category_to_class[category["id"]] = cls
        _register_images(data, wanted, objects)
        for ann in data.get("annotations", []):
            if ann["image_id"] in wanted:
                objects.setdefault(ann["image_id"], set()).add(category_to_class[ann["category_id"]])
    for path in captions:
        data = _load(path)
        _register_images(data, wanted, objects)
        for ann in data.get("annotations", []):
            if ann["image_id"] in wanted:
                named = {m.object for m in caption_mentions(str(ann["caption"]), vocabulary)}
                objects.setdefault(ann["image_id"], set()).update(named)
    absent = sorted(wanted - objects.keys())
    if absent:
        shown = ", ".join(map(str, absent[:5])) + (" ..." if len(absent) > 5 else "")
        raise ValueError(f"{len(absent)} image id(s) not in the COCO annotations: {shown}")
    return {image_id: frozenset(found) for image_id, found in objects.items()}


def _register_images(data: dict, wanted: set[int], objects: dict[int, set[str]]) -> None:
    # An image listed without annotations is known and simply has no objects from this file.
    for image in data.get("images", []):
        if image["id"] in wanted:
            objects.setdefault(image["id"], set())


def _load(path: Path) -> dict:
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError(f"{path} is not a COCO annotation file (no 'annotations' list)")
    return data


def _cache_key(files: list[Path], vocabulary: CocoVocabulary) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    digest.update(repr(sorted(vocabulary.synonym_to_class.items())).encode())
    digest.update(repr(sorted(vocabulary.phrases.items())).encode())
    return digest.hexdigest()


def _read_cache(cache_path: str | Path | None, key: str) -> dict[int, frozenset[str]]:
    if cache_path is None or not Path(cache_path).is_file():
        return {}
    try:
        data = json.loads(Path(cache_path).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}  # a damaged cache is rebuilt, never trusted
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("key") != key:
        return {}
    return {int(i): frozenset(o) for i, o in data.get("objects", {}).items()}
