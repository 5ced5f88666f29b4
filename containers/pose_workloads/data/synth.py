"""A synthetic COCO-keypoints dataset: drawn people on textured backgrounds.

Each image holds 1..max_people articulated figures (a 2D body model with named joints, posed at
random within human joint ranges, mostly facing the camera or turned away, scaled, rotated and
stretched), drawn as tapered, outlined limbs, a torso polygon and a head ellipse in per-person
clothing and skin colours; the left sleeve, trouser leg and shoe are lighter than the right ones,
so left and right can be told apart from any side (train on these sets without horizontal flips,
which would pair the lighter side with "right" half the time). People overlap; occluder patches cover some
joints; crowds of small figures are annotated `iscrowd=1` regions; some small people carry no
keypoints. The annotations follow COCO's conventions:

- v = 2 visible; v = 1 labelled but occluded (by another person, an occluder patch, the person's own
  torso or head); v = 0 not labelled (outside the image, or "missed by the annotator") with x = y = 0;
- bbox is the person's whole silhouette clipped to the image, so every labelled joint is inside it;
  segmentation and area are the visible part (area is the OKS scale, as in COCO);
- crowd regions: uncompressed RLE, no keypoints; skeletons in `categories` are 1-based.

Deterministic: image i is drawn from `default_rng([seed, i])` and encoded at a fixed JPEG quality,
so the same arguments give the same bytes. The annotation file is written last and atomically: a
folder without it is an unfinished set.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np

from pose_workloads.data.synth_body import (
    CROWD_ID,
    DRAWABLE_JOINTS,
    JOINT_ALIASES,
    JOINT_PARTS,
    MAX_PEOPLE,
    OCCLUDER_ID,
    PART,
    PARTS,
    PARTS_PER_PERSON,
    UNLABELLED_ID,
    Placement,
    direction,
    place_figure,
    sample_pose,
)
from pose_workloads.data.synth_draw import (
    ONE,
    SHIFT,
    clipped_colour,
    draw_background,
    draw_figure,
    fixed_point,
    random_style,
)
from pose_workloads.errors import BadInput
from pose_workloads.progress import track
from pose_workloads.specs import COCO17, PoseConfig, load_pose_config

ANNOTATIONS_FILE = "annotations/person_keypoints.json"
JPEG_QUALITY = 90

# --------------------------------------------------------------------------------------------
# One image and its annotations.
# --------------------------------------------------------------------------------------------

def _random_placement(rng: np.random.Generator, width: int, height: int, height_px: float,
                      upright: bool = True) -> Placement:
    # Mostly upright (people stand), a few lying or tumbling; the pelvis is kept where most of
    # the body is inside the image, so cut-off limbs happen but whole people rarely vanish.
    rotation = rng.normal(0, 0.2) if upright and rng.random() < 0.9 else rng.uniform(-math.pi, math.pi)
    top, bottom = 0.4 * height_px, 0.4 * height_px
    y_low, y_high = min(top, height / 2), max(height - bottom, height / 2)
    return Placement(
        centre=np.array([rng.uniform(0.08, 0.92) * width, rng.uniform(y_low, y_high)]),
        height_px=height_px,
        rotation=float(rotation),
        aspect=float(rng.uniform(0.8, 1.25)),
    )


def _box_of_discs(discs: np.ndarray, width: int, height: int) -> list[float] | None:
    x0 = max(float((discs[:, 0] - discs[:, 2]).min()), 0.0)
    y0 = max(float((discs[:, 1] - discs[:, 2]).min()), 0.0)
    x1 = min(float((discs[:, 0] + discs[:, 2]).max()), float(width))
    y1 = min(float((discs[:, 1] + discs[:, 2]).max()), float(height))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def _polygons(mask: np.ndarray, offset: tuple[int, int]) -> list[list[float]]:
    """COCO polygons (x, y px, closed) of a bool mask's outer outlines."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if len(contour) >= 3:
            polygons.append((contour.reshape(-1) + np.tile(offset, len(contour))).astype(float).tolist())
    return polygons


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major run lengths, starting with a run of 0s), as COCO's own
    crowd annotations are written."""
    flat = mask.T.ravel().astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def render_image(
    rng: np.random.Generator, width: int, height: int, max_people: int, joint_names: list[str], easy: bool = False
) -> tuple[np.ndarray, list[dict]]:
    """Draw one image. Returns (H, W, 3) uint8 BGR and its COCO annotations without ids.

    `joint_names` are canonical DRAWABLE_JOINTS names, in the pose config's order. `easy` (the
    CPU demo's set) leaves out crowds, unlabelled people and occluder patches, keeps every person
    upright and makes them large, so a tiny model learns it in minutes.
    """
    image = draw_background(rng, height, width)
    owner = np.zeros((height, width), dtype=np.uint16)
    parts = np.arange(len(PARTS))
    annotations: list[dict] = []
    unlabelled: list[tuple[int, np.ndarray]] = []

    # A crowd far away: a cluster of small figures, annotated as one iscrowd region drawn round
    # the whole cluster (as COCO's annotators do), also where people in front cover it.
    crowd = None
    if not easy and rng.random() < 0.35:
        centre = rng.uniform(0.2, 0.8, 2) * (width, height)
        spread = rng.uniform(0.08, 0.2) * np.array([width, height])
        figures = []
        for _ in range(int(rng.integers(6, 15))):
            where = Placement(centre + rng.normal(0, 1, 2) * spread, rng.uniform(0.1, 0.2) * height,
                              float(rng.normal(0, 0.1)), float(rng.uniform(0.8, 1.2)))
            figures.append(where)
        for where in sorted(figures, key=lambda p: p.centre[1]):
            draw_figure(image, owner, place_figure(sample_pose(rng), where), random_style(rng),
                        np.full(len(PARTS), CROWD_ID), face_details=False)
        gap = 2 * (min(width, height) // 60) + 3
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (gap, gap))
        crowd = cv2.morphologyEx((owner == CROWD_ID).astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)

    # Small people nobody labelled (COCO has many): num_keypoints 0.
    for j in range(int(rng.integers(1, 3)) if not easy and rng.random() < 0.25 else 0):
        where = _random_placement(rng, width, height, rng.uniform(0.08, 0.2) * height)
        discs = draw_figure(image, owner, place_figure(sample_pose(rng), where), random_style(rng),
                            np.full(len(PARTS), UNLABELLED_ID + j), face_details=False)
        unlabelled.append((UNLABELLED_ID + j, discs))

    # The labelled people, far (small) to near (large).
    count = int(rng.integers(1, max_people + 1))
    heights = np.sort(rng.uniform(0.55 if easy else 0.3, 0.95, count) * height * (1.0 if count <= 2 else 0.8))
    people = []
    for slot, height_px in enumerate(heights):
        where = _random_placement(rng, width, height, float(height_px))
        if easy:
            where.rotation = float(np.clip(where.rotation, -0.3, 0.3))  # no one lying or tumbling
        fig = place_figure(sample_pose(rng), where)
        base = 1 + slot * PARTS_PER_PERSON
        style = random_style(rng)
        discs = draw_figure(image, owner, fig, style, base + parts)
        drawn = np.count_nonzero((owner >= base) & (owner < base + PARTS_PER_PERSON))
        people.append((fig, base, discs, drawn))

    # Things in front of people: posts, bags, cars.
    for _ in range(int(rng.integers(1, 3)) if not easy and rng.random() < 0.35 else 0):
        colour = clipped_colour(rng.uniform(0, 255, 3))
        w, h = rng.uniform(0.08, 0.3, 2) * min(width, height)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        if rng.random() < 0.5:
            for target, value in ((image, colour), (owner, OCCLUDER_ID)):
                cv2.rectangle(target, fixed_point((x, y)), fixed_point((x + w, y + h)), value, -1, cv2.LINE_8, SHIFT)
        else:
            axes = (int(w / 2 * ONE), int(h / 2 * ONE))
            for target, value in ((image, colour), (owner, OCCLUDER_ID)):
                cv2.ellipse(target, fixed_point((x + w / 2, y + h / 2)), axes, 0, 0, 360, value, -1, cv2.LINE_8, SHIFT)

    # Clothing texture: stripes on some shirts, where the person is still visible (not on sleeves
    # or trouser legs, whose tone tells left from right).
    for _, base, discs, _ in people:
        box = _box_of_discs(discs, width, height)
        if rng.random() >= 0.4 or box is None:
            continue
        x0, y0 = int(box[0]), int(box[1])
        x1, y1 = int(math.ceil(box[0] + box[2])), int(math.ceil(box[1] + box[3]))
        region = owner[y0:y1, x0:x1]
        mask = region == base + PART["torso"]
        k = direction(rng.uniform(0, math.pi)) * (2 * math.pi / rng.uniform(4, 12))
        ys, xs = np.nonzero(mask)
        dark = np.sin((xs + x0) * k[0] + (ys + y0) * k[1]) > 0
        pixels = image[ys[dark] + y0, xs[dark] + x0]
        image[ys[dark] + y0, xs[dark] + x0] = (pixels * rng.uniform(0.5, 0.75)).astype(np.uint8)
    # Sensor noise, saturating in uint8.
    image = cv2.subtract(cv2.add(image, rng.integers(0, 13, image.shape, dtype=np.uint8)), np.full_like(image, 6))
    if rng.random() < 0.25:
        image = cv2.GaussianBlur(image, (3, 3), 0)

    num_joints = len(joint_names)
    for fig, base, discs, drawn in people:
        box = _box_of_discs(discs, width, height)
        visible = (owner >= base) & (owner < base + PARTS_PER_PERSON)
        area = int(np.count_nonzero(visible))
        polygons = _polygons(visible, (0, 0))
        if box is None or not polygons:
            continue  # (almost) nothing of this person is left to see: COCO would not annotate them
        keypoints = np.zeros((num_joints, 3))
        for k, name in enumerate(joint_names):
            x, y = fig.px[name]
            if not (0 <= x < width and 0 <= y < height):
                continue
            flag = fig.view.face_flags.get(name, 2)
            if fig.view.profile and name in (f"{fig.view.far_side}_shoulder", f"{fig.view.far_side}_hip"):
                flag = 1  # behind the torso
            on_top = int(owner[int(y), int(x)])
            if on_top not in [base + PART[p] for p in JOINT_PARTS[name]]:
                flag = min(flag, 1)
            if flag == 0 or rng.random() < 0.03:  # 3 %: the annotator missed it
                continue
            keypoints[k] = (round(float(x), 2), round(float(y), 2), flag)
        # Mostly hidden people are not labelled, as in COCO; they become ignore regions.
        if area < 0.25 * drawn:
            keypoints[:] = 0
        annotations.append(_annotation(keypoints, box, area, polygons))

    for owner_id, discs in unlabelled:
        mask = owner == owner_id
        box = _box_of_discs(discs, width, height)
        polygons = _polygons(mask, (0, 0))
        if box is not None and polygons:
            annotations.append(_annotation(np.zeros((num_joints, 3)), box, int(mask.sum()), polygons))
    if crowd is not None and crowd.sum() >= 20:
        ys, xs = np.nonzero(crowd)
        box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        annotations.append(_annotation(np.zeros((num_joints, 3)), box, int(crowd.sum()), _rle(crowd), iscrowd=1))
    return image, annotations


def _annotation(keypoints: np.ndarray, box: list[float], area: int, segmentation, iscrowd: int = 0) -> dict:
    return {
        "category_id": 1,
        "iscrowd": iscrowd,
        "num_keypoints": int(np.count_nonzero(keypoints[:, 2])),
        "keypoints": [round(float(v), 2) if i % 3 != 2 else int(v) for i, v in enumerate(keypoints.ravel())],
        "bbox": [round(v, 2) for v in box],
        "area": float(area),
        "segmentation": segmentation,
    }


# --------------------------------------------------------------------------------------------
# The dataset on disk.
# --------------------------------------------------------------------------------------------

def drawable_names(pose_config: PoseConfig) -> list[str]:
    """The pose config's joints as DRAWABLE_JOINTS names. BadInput names any it cannot draw."""
    names = [JOINT_ALIASES.get(n.lower(), n.lower()) for n in pose_config.keypoints]
    unknown = [orig for orig, n in zip(pose_config.keypoints, names) if n not in DRAWABLE_JOINTS]
    if unknown:
        raise BadInput(
            f"pose config {pose_config.name}: keypoints: synth cannot draw {', '.join(unknown)}; "
            f"use joints among {', '.join(DRAWABLE_JOINTS)} (aliases: {', '.join(JOINT_ALIASES)})"
        )
    return names


def write_synthetic_dataset(
    out_dir: str | Path,
    images: int = 200,
    seed: int = 0,
    max_people: int = 3,
    size: tuple[int, int] = (256, 256),
    pose_config: PoseConfig = COCO17,
    show_progress: bool = True,
    easy: bool = False,
) -> Path:
    """Write `out_dir/images/<id>.jpg` and `out_dir/annotations/person_keypoints.json` (COCO).

    `size` is (width, height); `easy` draws the demo's easier scenes (see `render_image`). The
    annotation file is removed first and written last (tmp + os.replace), so a run that is killed
    leaves no file that looks complete. Returns `out_dir`.
    """
    width, height = size
    if images < 1:
        raise BadInput(f"--images {images}: must be at least 1")
    if not 1 <= max_people <= MAX_PEOPLE:
        raise BadInput(f"--max_people {max_people}: must be 1..{MAX_PEOPLE}")
    if width < 32 or height < 32:
        raise BadInput(f"--size {width}x{height}: both sides must be at least 32 px, e.g. 256x256")
    joint_names = drawable_names(pose_config)
    out = Path(out_dir)
    annotations_path = out / ANNOTATIONS_FILE
    annotations_path.unlink(missing_ok=True)
    for stale in annotations_path.parent.glob(f".{annotations_path.name}.*.tmp"):  # a run killed with -9
        stale.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)
    annotations_path.parent.mkdir(parents=True, exist_ok=True)

    image_entries, annotation_entries = [], []
    for index in track(range(images), images, "synthesizing images", enabled=show_progress):
        image_id = index + 1
        image, anns = render_image(np.random.default_rng([seed, index]), width, height, max_people, joint_names, easy)
        ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        file_name = f"{image_id:012d}.jpg"
        (out / "images" / file_name).write_bytes(jpg.tobytes())
        image_entries.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for j, ann in enumerate(anns):
            annotation_entries.append({"id": image_id * 1000 + j, "image_id": image_id, **ann})
    # Images from an earlier, larger run would be unlisted strays.
    wanted = {e["file_name"] for e in image_entries}
    for stray in (out / "images").glob("*.jpg"):
        if re.fullmatch(r"\d{12}\.jpg", stray.name) and stray.name not in wanted:
            stray.unlink()

    dataset = {
        "info": {
            "description": "pose synthetic keypoints",
            "seed": seed, "images": images, "max_people": max_people, "size": [width, height],
            "pose_config": pose_config.name, "easy": easy,
        },
        "licenses": [],
        "images": image_entries,
        "annotations": annotation_entries,
        "categories": [{
            "id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(pose_config.keypoints),
            "skeleton": [[a + 1, b + 1] for a, b in pose_config.skeleton],  # COCO's are 1-based
        }],
    }
    tmp = annotations_path.with_name(f".{annotations_path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(dataset, separators=(",", ":")))
        os.replace(tmp, annotations_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def parse_size(text: str) -> tuple[int, int]:
    """"WxH" -> (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise BadInput(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 256x256")
    return int(match.group(1)), int(match.group(2))


def main(args) -> int:
    """`pose dataset synth -o DIR [--images N] [--seed S] [--max_people K] [--size WxH] [--pose_config JSON]
    [--easy]`."""
    size = parse_size(args.size)
    pose_config = load_pose_config(args.pose_config)
    out = write_synthetic_dataset(args.output, args.images, args.seed, args.max_people, size, pose_config,
                                  easy=args.easy)
    print(f"wrote {args.images} images to {out / 'images'} and their annotations to {out / ANNOTATIONS_FILE}")
    return 0
