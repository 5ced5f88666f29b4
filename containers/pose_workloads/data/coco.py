"""COCO person-keypoint annotations, read once and checked, as small typed records.

`load_coco` makes one pass over the annotations (pycocotools keeps the index, for masks and
evaluation). A few bad annotations are skipped and counted with a warning naming their ids, not a
crash mid-epoch; a file that is not COCO at all, or where nothing usable is left, is `BadInput`.
Undecodable images are only found when read: `read_image` raises `BadSample`, and datasets draw
another sample with `redraw_on_bad_sample`.

Coordinates are COCO's: image pixels, x right, y down. Keypoint flags v: 0 not labelled,
1 labelled but occluded, 2 labelled and visible.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pycocotools.coco import COCO

from pose_workloads.errors import BadInput
from pose_workloads.media import BadSample
from pose_workloads.specs import COCO17, PoseConfig

log = logging.getLogger(__name__)

# How many offending ids a warning lists: enough to find them, short enough to read.
EXAMPLE_IDS = 5


@dataclass(frozen=True)
class Person:
    """One labelled person (not a crowd region, at least one labelled joint)."""

    image_id: int
    ann_id: int
    image_path: str
    bbox: np.ndarray  # (4,) float32 x, y, w, h in image px, clipped to the image
    keypoints: np.ndarray  # (K, 3) float32 x, y, v in image px; x = y = 0 where v = 0
    area: float  # COCO's segmentation area (px^2): the OKS scale
    iscrowd: bool  # always False here (crowd regions are ImageRecord.ignore_ann_ids)
    num_keypoints: int  # joints with v > 0


@dataclass(frozen=True)
class ImageRecord:
    """One image whose file exists, with the annotations that touch it."""

    image_id: int
    image_path: str
    width: int
    height: int
    people: tuple[int, ...]  # indices into CocoSet.people
    # Crowd regions and people without labelled joints: kept for loss masks (`ignore_mask`).
    ignore_ann_ids: tuple[int, ...]


@dataclass
class CocoSet:
    annotations_path: Path
    coco: COCO
    pose_config: PoseConfig
    people: list[Person]
    images: list[ImageRecord]
    skipped: Counter  # human-readable reason -> how many images/annotations were skipped


def load_coco(
    images_dir: str | Path,
    annotations_json: str | Path,
    pose_config: PoseConfig = COCO17,
) -> CocoSet:
    """Read a COCO keypoints file and check every image and person annotation once.

    Images whose file is missing are skipped (checked up front: a stat per image); annotations
    with a keypoint list of the wrong length, bad flags, or a box with nothing inside the image are
    skipped; boxes reaching outside the image are clipped. Each reason is counted in `skipped` and
    warned about once with the first offending ids.

    Raises:
        BadInput: the file is missing or not COCO, its categories name a different number of
            joints than `pose_config`, none of its images exist, or every person was skipped.
    """
    annotations_json = Path(annotations_json)
    images_dir = Path(images_dir)
    data = read_coco_json(annotations_json)
    num_joints = pose_config.num_joints
    _check_categories(data, annotations_json, pose_config)

    skipped: Counter = Counter()
    examples: dict[str, list[Any]] = {}

    def skip(reason: str, example: Any) -> None:
        skipped[reason] += 1
        examples.setdefault(reason, [])
        if len(examples[reason]) < EXAMPLE_IDS:
            examples[reason].append(example)

    image_info: dict[int, tuple[str, int, int]] = {}
    for img in data["images"]:
        try:
            image_id, file_name = int(img["id"]), str(img["file_name"])
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError):
            skip("image entry without id, file_name, width or height",
                 img.get("id", "?") if isinstance(img, dict) else "?")
            continue
        path = os.path.join(images_dir, file_name)
        if not os.path.exists(path):
            skip("image file missing", file_name)
            continue
        image_info[image_id] = (path, width, height)
    if data["images"] and not image_info:
        first = data["images"][0].get("file_name", "?") if isinstance(data["images"][0], dict) else "?"
        raise BadInput(
            f"{annotations_json}: none of its {len(data['images'])} images are in {images_dir} "
            f"(first: {first}); check the images directory"
        )

    categories = [c for c in data.get("categories") or [] if isinstance(c, dict)]
    person_categories = {c.get("id") for c in categories if c.get("name") == "person"}
    by_image_people: dict[int, list[int]] = {i: [] for i in image_info}
    by_image_ignore: dict[int, list[int]] = {i: [] for i in image_info}
    chosen: list[tuple[dict, list[float]]] = []  # (annotation, clipped box) of labelled people
    keypoint_rows: list[list[float]] = []
    candidates = 0
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            skip("annotation is not a JSON object", "?")
            continue
        if person_categories and ann.get("category_id") not in person_categories:
            continue
        ann_id = ann.get("id", "?")
        if "id" not in ann or "image_id" not in ann:
            skip("annotation without id or image_id", ann_id)
            continue
        candidates += 1
        info = image_info.get(ann["image_id"])
        if info is None:
            skip("annotation of a missing or unlisted image", ann_id)
            continue
        _, width, height = info
        box = _clip_box(ann.get("bbox"), width, height)
        if box is None:
            skip("bbox missing, malformed or entirely outside the image", ann_id)
            continue
        if ann.get("iscrowd", 0):
            if "segmentation" not in ann:
                skip("crowd region without segmentation", ann_id)
                continue
            by_image_ignore[ann["image_id"]].append(ann_id)
            continue
        keypoints = ann.get("keypoints") or []
        if len(keypoints) and len(keypoints) != 3 * num_joints:
            skip(f"keypoints has the wrong length (expected 3 x {num_joints} for pose config {pose_config.name})",
                 ann_id)
            continue
        flags = keypoints[2::3]
        if any(v not in (0, 1, 2) for v in flags):
            skip("keypoint flag not 0, 1 or 2", ann_id)
            continue
        if not any(flags):
            # A person nobody labelled: neither a positive nor a negative for the loss.
            by_image_ignore[ann["image_id"]].append(ann_id)
            continue
        chosen.append((ann, box))
        keypoint_rows.append(keypoints)

    try:  # one conversion for all people: this is the part that scales with COCO train
        keypoints_all = np.asarray(keypoint_rows, dtype=np.float32).reshape(-1, num_joints, 3)
    except (TypeError, ValueError):  # a null or a string somewhere: find it row by row
        keypoints_all = (np.stack([_keypoint_row(r, num_joints) for r in keypoint_rows]) if keypoint_rows
                         else np.zeros((0, num_joints, 3), np.float32))
    finite = np.isfinite(keypoints_all).all(axis=(1, 2))
    boxes_all = np.asarray([box for _, box in chosen], dtype=np.float32).reshape(-1, 4)
    people: list[Person] = []
    for (ann, box), kps, bbox, ok in zip(chosen, keypoints_all, boxes_all, finite):
        if not ok:
            skip("keypoint coordinates not finite", ann["id"])
            continue
        kps[kps[:, 2] == 0, :2] = 0.0  # COCO's convention; some tools write junk there
        path, _, _ = image_info[ann["image_id"]]
        by_image_people[ann["image_id"]].append(len(people))
        people.append(
            Person(
                image_id=ann["image_id"],
                ann_id=ann["id"],
                image_path=path,
                bbox=bbox,
                keypoints=kps,
                area=float(ann.get("area") or box[2] * box[3]),
                iscrowd=False,
                num_keypoints=int(np.count_nonzero(kps[:, 2])),
            )
        )

    for reason, count in skipped.items():
        log.warning(
            "%s: skipped %d: %s (first: %s)",
            annotations_json, count, reason, ", ".join(str(e) for e in examples[reason]),
        )
    if candidates and not people and any(r != "image file missing" for r in skipped):
        reasons = "; ".join(f"{n} {r}" for r, n in skipped.most_common())
        raise BadInput(
            f"{annotations_json}: annotations: no usable person left ({reasons}); fix the file or the pose config")

    images = [
        ImageRecord(
            image_id=image_id,
            image_path=path,
            width=width,
            height=height,
            people=tuple(by_image_people[image_id]),
            ignore_ann_ids=tuple(by_image_ignore[image_id]),
        )
        for image_id, (path, width, height) in sorted(image_info.items())
    ]
    return CocoSet(annotations_json, _index(data), pose_config, people, images, skipped)


def _keypoint_row(values: list[Any], num_joints: int) -> np.ndarray:
    """(K, 3) float32, NaN everywhere when a value is not a number (then skipped as not finite)."""
    try:
        return np.asarray(values, dtype=np.float32).reshape(num_joints, 3)
    except (TypeError, ValueError):
        return np.full((num_joints, 3), np.nan, dtype=np.float32)


def read_coco_json(path: Path) -> dict[str, Any]:
    """The parsed COCO file, or BadInput naming the file when it is missing, not JSON or not COCO."""
    if not path.is_file():
        raise BadInput(f"{path}: file not found; check the annotations path (and that its folder is mounted)")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not valid JSON ({err}); give a COCO keypoints annotation file") from None
    if not (isinstance(data, dict) and isinstance(data.get("images"), list)
            and isinstance(data.get("annotations"), list)):
        raise BadInput(
            f"{path}: images/annotations: not a COCO annotation file (needs 'images' and 'annotations' lists); "
            "give a COCO keypoints file such as person_keypoints_val2017.json"
        )
    return data


def _check_categories(data: dict[str, Any], path: Path, pose_config: PoseConfig) -> None:
    # A whole file in another joint set is one mistake (the wrong --pose_config), not 100k bad samples.
    for i, category in enumerate(data.get("categories") or []):
        names = category.get("keypoints") if isinstance(category, dict) else None
        if names and len(names) != pose_config.num_joints:
            raise BadInput(
                f"{path}: categories[{i}].keypoints: names {len(names)} joints but pose config "
                f"{pose_config.name} has {pose_config.num_joints}; pass the pose config these annotations use"
            )


def _clip_box(bbox: Any, width: int, height: int) -> list[float] | None:
    """COCO xywh clipped to the image, or None when malformed or nothing is left."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h)):
        return None
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def _index(data: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def ignore_mask(coco: COCO, record: ImageRecord, people: list[Person]) -> np.ndarray | None:
    """Pixels the loss should ignore: crowd regions and unlabelled people, minus labelled people.

    Returns (H, W) bool in image px (True = ignore), or None when nothing is ignored. An annotation
    without a segmentation is ignored over its box.
    """
    if not record.ignore_ann_ids:
        return None
    shape = (record.height, record.width)
    ignore = np.zeros(shape, dtype=bool)
    for ann_id in record.ignore_ann_ids:
        ignore |= _ann_mask(coco, coco.anns[ann_id], shape)
    for index in record.people:
        ignore &= ~_ann_mask(coco, coco.anns[people[index].ann_id], shape)
    return ignore


def _ann_mask(coco: COCO, ann: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    if ann.get("segmentation"):
        mask = coco.annToMask(ann).astype(bool)
        if mask.shape == shape:
            return mask
    # No (or a mis-sized) segmentation: the box is the best we know.
    mask = np.zeros(shape, dtype=bool)
    box = _clip_box(ann.get("bbox"), shape[1], shape[0])
    if box is not None:
        x, y, w, h = box
        mask[int(y): int(np.ceil(y + h)), int(x): int(np.ceil(x + w))] = True
    return mask


T = TypeVar("T")


def redraw_on_bad_sample(
    load: Callable[[int], T],
    index: int,
    num_samples: int,
    rng: np.random.Generator,
    skipped: Counter,
    max_redraws: int = 20,
) -> T:
    """`load(index)`, or, when it raises BadSample, `load` of another random index.

    Each bad sample is counted in `skipped` by reason and warned about the first time its reason
    is seen (per process: DataLoader workers count separately). A map-style dataset's
    `__getitem__` can be `return redraw_on_bad_sample(self._load, i, len(self), self.rng, self.skipped)`.

    Raises:
        BadInput: `max_redraws` bad samples in a row: most of the data is unreadable.
    """
    last = None
    for _ in range(max_redraws + 1):
        try:
            return load(index)
        except BadSample as err:
            if skipped[err.reason] == 0:
                log.warning("skipping unreadable sample %s (further ones with this reason are only counted)", err)
            skipped[err.reason] += 1
            last = err
            index = int(rng.integers(num_samples))
    raise BadInput(f"{max_redraws + 1} samples in a row could not be read (last: {last}); check the images directory")
