"""Person boxes from a COCO results file (a detector's output, e.g.
COCO_val2017_detections_AP_H_56_person.json): the one reader, with one policy for bad entries.

    [{"image_id": 785, "category_id": 1, "bbox": [x, y, w, h], "score": 0.98}, ...]

An entry may name its image by "file_name" instead of (or besides) "image_id". The policy:

- the file missing, not JSON, or not a list: BadInput naming the file;
- an entry without an image (file_name or image_id) or a bbox of four numbers: BadInput naming
  the entry's index, since a detector never writes one and a hand-edited file should be fixed;
- other categories and boxes scoring below the threshold: left out, silently (that is what the
  threshold is for). Callers that match boxes to images skip and count the ones that fit no image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pose_workloads.errors import BadInput

PERSON = 1  # COCO's person category id


class Detection(NamedTuple):
    image_id: int | None
    file_name: str | None  # the base name when the entry has one
    box_xywh: np.ndarray  # (4,) float32 image px
    score: float  # 1.0 when the entry has none


def read_detections(path: str | Path, score_threshold: float = 0.0, category_id: int = PERSON,
                    flag: str = "detections") -> list[Detection]:
    """The boxes of `category_id` scoring at least `score_threshold`, in file order.

    Args:
        flag: how the user gave the file (e.g. "--boxes"), for the not-found message.
    Raises:
        BadInput: the file is missing or not JSON, the top level is not a list, or an entry has
            no image or no bbox of four numbers (naming its index).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: file not found; check the {flag} path (and that its folder is mounted)")
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not valid JSON ({err}); give a COCO results file of person boxes") from None
    if not isinstance(entries, list):
        raise BadInput(f"{path}: top level: expected a list of {{image_id or file_name, category_id, bbox, score}}; "
                       "give a COCO results file")
    found = []
    for i, entry in enumerate(entries):
        try:
            file_name = Path(entry["file_name"]).name if "file_name" in entry else None
            image_id = int(entry["image_id"]) if "image_id" in entry else None
            if file_name is None and image_id is None:
                raise KeyError("image_id")
            box = np.asarray(entry["bbox"], dtype=np.float32).reshape(4)
            score = float(entry.get("score", 1.0))
            category = entry.get("category_id", category_id)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BadInput(
                f"{path}: [{i}]: needs file_name or image_id, and bbox [x, y, w, h]; fix that entry") from None
        if category == category_id and score >= score_threshold:
            found.append(Detection(image_id, file_name, box, score))
    return found


def read_boxes(path: str | Path | None, score_threshold: float = 0.0) -> dict[Any, list[tuple[np.ndarray, float]]]:
    """A COCO results file of person boxes (read_detections) -> {file_name or
    image_id: [(box xywh, score)]}.

    Entries are keyed by "file_name" when they have one, else by "image_id" (matched to files
    named by their id, COCO style 000000000785.jpg, or to a video's frame index from 0).
    """
    if path is None:
        return {}
    boxes: dict[Any, list[tuple[np.ndarray, float]]] = {}
    for detection in read_detections(path, score_threshold, flag="--boxes"):
        key = detection.file_name if detection.file_name is not None else detection.image_id
        boxes.setdefault(key, []).append((detection.box_xywh, detection.score))
    return boxes
