"""A hand-made COCO annotation folder and captions whose CHAIR counts are worked out by hand
in test_chair.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CATEGORIES = [
    {"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 4, "name": "motorcycle"},
    {"id": 11, "name": "fire hydrant"}, {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"},
    {"id": 34, "name": "frisbee"}, {"id": 58, "name": "hot dog"}, {"id": 62, "name": "chair"},
    {"id": 67, "name": "dining table"}, {"id": 70, "name": "toilet"}, {"id": 88, "name": "teddy bear"},
]
IMAGES = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (1, 2, 3, 4, 5)]
INSTANCES = [  # (image, category): image 4 has no instance at all
    (1, 18), (1, 1), (1, 1), (2, 88), (2, 62), (3, 3), (5, 70),
]
REFERENCE_CAPTIONS = [
    (1, "A man walks his dog."),
    (3, "A car parked next to a fire hydrant."),  # adds "fire hydrant" to image 3
    (4, "A plate of food on a table."),  # "table" -> dining table for image 4
    (5, "A white toilet."),
]

# Per caption: mentions (word, class), hallucinated, ground truth. Worked out by hand:
#  1: men->person, puppies->dog, frisbee (halluc.), cat (halluc.)      gt {person, dog}
#  2: teddy bear, chair, hot dog (halluc.); "bear"/"dog" are not extra gt {teddy bear, chair}
#  3: automobile->car, hydrant->fire hydrant, motor bike->motorcycle (halluc.)
#                                                                      gt {car, fire hydrant}
#  4: no object at all                                                 gt {dining table}
#  5: truncated: "A cat sits on the toilet seat next to a" is dropped; toilet gt {toilet}
CAPTIONS = [
    {"question_id": "q1", "image_id": 1,
     "caption": "Two men and their puppies play with a frisbee near a cat.", "finish_reason": "stop"},
    {"question_id": "q2", "image_id": 2,
     "caption": "A teddy bear sits on a chair next to a hot dog.", "finish_reason": "stop"},
    {"question_id": "q3", "image_id": "COCO_val2014_000000000003.jpg",
     "caption": "A red automobile is parked beside a hydrant. There is a motor bike behind it.",
     "finish_reason": "stop"},
    {"question_id": "q4", "image_id": 4, "caption": "An empty room with white walls.",
     "finish_reason": "stop"},
    {"question_id": "q5", "image_id": 5,
     "caption": "A toilet in a bathroom. A cat sits on the toilet seat next to a",
     "finish_reason": "length"},
]


def write_coco(folder: Path) -> Path:
    """Write instances_val2014.json and captions_val2014.json into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    instances = {
        "images": IMAGES, "categories": CATEGORIES,
        "annotations": [{"id": n, "image_id": i, "category_id": c} for n, (i, c) in enumerate(INSTANCES)],
    }
    captions = {
        "images": IMAGES,
        "annotations": [{"id": n, "image_id": i, "caption": t} for n, (i, t) in enumerate(REFERENCE_CAPTIONS)],
    }
    (folder / "instances_val2014.json").write_text(json.dumps(instances))
    (folder / "captions_val2014.json").write_text(json.dumps(captions))
    return folder


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "annotations")


@pytest.fixture
def caption_records() -> list[dict]:
    return [dict(c) for c in CAPTIONS]
