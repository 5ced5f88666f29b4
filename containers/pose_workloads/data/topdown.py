"""Top-down samples: one person box -> a fixed-size normalised crop and its Gaussian targets.

Simple Baselines (Xiao et al. 2018) / GluonCV `SimplePoseDefaultTrainTransform`: the box is grown to
the model's aspect ratio and padded 1.25x, then (training) scaled, rotated, mirrored and sometimes
cut to the upper or lower body; one `cv2.warpAffine` makes the crop and the same matrix moves the
joints. Reading and checking the annotations is `data/coco.py`'s job; this module only crops.

Coordinate spaces: image px of the original image; input px of the crop (input_size); heatmap px
(input px / stride). All x right, y down, pixel (i, j) centred at x=j, y=i, as OpenCV.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from pose_workloads.data.coco import ImageRecord, Person, redraw_on_bad_sample
from pose_workloads.data.targets import gaussian_heatmaps
from pose_workloads.detections import read_detections
from pose_workloads.media import read_image
from pose_workloads.specs import PoseConfig

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BOX_PADDING = 1.25  # Simple Baselines: room around the box so limbs at its edge stay in the crop
HALF_BODY_PADDING = 1.5  # Simple Baselines' half-body box padding

# Words that put a joint in the upper or lower half for half-body augmentation. Matched against
# the name's words, so a custom joint set (CrowdPose's "head"/"neck", MPII's "thorax"/"pelvis")
# splits without a hand-written index list; a joint matching neither is in neither half.
UPPER_BODY_WORDS = ("nose", "eye", "ear", "mouth", "head", "neck", "thorax", "shoulder", "elbow", "wrist", "hand")
LOWER_BODY_WORDS = ("pelvis", "hip", "knee", "ankle", "foot", "heel", "toe")


# ------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------

def box_to_center_scale(
    box_xywh: Sequence[float], aspect_ratio: float, padding: float = BOX_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """A person box -> the crop around it.

    Args:
        box_xywh: (4,) x, y, w, h in image px.
        aspect_ratio: crop width / height (192 / 256 for a 256x192 model).
        padding: growth factor applied after fitting the aspect ratio.
    Returns:
        center: (2,) float32 (x, y) image px, the box centre.
        scale: (2,) float32 (w, h) of the crop in image px: the box grown along one side to
            `aspect_ratio`, times `padding`. (Pixels, not Simple Baselines' pixels / 200.)
    """
    x, y, w, h = (float(v) for v in box_xywh)
    center = np.array([x + 0.5 * w, y + 0.5 * h], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w * padding, h * padding], dtype=np.float32)


def affine_transform_matrix(
    center: Sequence[float],
    scale: Sequence[float],
    rotation_deg: float,
    output_size: tuple[int, int],
    inverse: bool = False,
) -> np.ndarray:
    """The (2, 3) float64 affine from image px to crop px (or back, with `inverse`).

    Simple Baselines' `get_affine_transform`: `center` goes to the crop centre (W/2, H/2), the
    crop is rotated by `rotation_deg` (counter-clockwise on screen) about it, and `scale[0]` image
    px span the crop width. Built from three point pairs with `cv2.getAffineTransform`.

    Args:
        center: (2,) image px. scale: (2,) crop (w, h) in image px. output_size: (H, W) of the crop.
    """
    out_h, out_w = output_size
    theta = np.deg2rad(rotation_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    up_src = np.array([0.5 * scale[0] * sin, -0.5 * scale[0] * cos])  # (0, -w/2) rotated by theta
    up_dst = np.array([0.0, -0.5 * out_w])
    src_center = np.asarray(center, dtype=np.float64)
    dst_center = np.array([0.5 * out_w, 0.5 * out_h])
    src = np.stack([src_center, src_center + up_src, src_center + up_src + _quarter_turn(up_src)])
    dst = np.stack([dst_center, dst_center + up_dst, dst_center + up_dst + _quarter_turn(up_dst)])
    if inverse:
        return cv2.getAffineTransform(dst.astype(np.float32), src.astype(np.float32))
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))


def _quarter_turn(v: np.ndarray) -> np.ndarray:
    # Simple Baselines' get_3rd_point: the third point sits a quarter turn off the second, so the
    # three pairs fix a similarity (no shear).
    return np.array([v[1], -v[0]])


def mirror_matrix(image_width: int) -> np.ndarray:
    """(3, 3) float64: x -> image_width - 1 - x, Simple Baselines' `fliplr_joints` and image flip.

    (3, 3) so that `crop_matrix @ mirror_matrix(w)` composes; `transform_points` reads its top rows.
    """
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(P, 2) float points through a (2, 3) affine -> (P, 2) float64.

    Written out element-wise (not a matmul) so the per-joint reference in bench/ gets the same bits.
    """
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return np.stack(
        [matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2], matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]],
        axis=-1,
    )


def body_halves(keypoint_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of upper-body and lower-body joints, from the joint names' words.

    "left_shoulder" -> upper, "right_knee" -> lower; CrowdPose's "head"/"neck" -> upper. Names
    are split on anything that is not a letter, and camelCase is split too ("leftKnee").
    """
    upper, lower = [], []
    for index, name in enumerate(keypoint_names):
        words = set(re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower().split())
        words = {w for part in words for w in re.split(r"[^a-z]+", part) if w}
        words |= {w[:-1] for w in words if w.endswith("s")}  # "eyes", "hands"
        if words & set(UPPER_BODY_WORDS):
            upper.append(index)
        elif words & set(LOWER_BODY_WORDS):
            lower.append(index)
    return np.array(upper, dtype=np.int64), np.array(lower, dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# Augmentation parameters
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopDownAugmentation:
    """Simple Baselines' training augmentation; same names as `specs.SimplePoseAugmentation`,
    so `TopDownAugmentation(**spec.augmentation.model_dump())` works."""

    scale_factor: float = 0.3  # scale *= clip(1 + N(0, f), 1 - f, 1 + f)
    rotation_deg: float = 40.0  # standard deviation; clipped at twice this
    rotation_prob: float = 0.6  # rotate at all with this probability
    flip: bool = True  # mirror with probability 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8  # half-body only for people with more labelled joints than this


class CropParams(NamedTuple):
    center: np.ndarray  # (2,) float32 image px
    scale: np.ndarray  # (2,) float32 crop (w, h) image px
    rotation_deg: float
    flipped: bool


def draw_crop_params(
    box_xywh: np.ndarray,
    keypoints: np.ndarray,
    image_width: int,
    aspect_ratio: float,
    aug: TopDownAugmentation | None,
    upper: np.ndarray,
    lower: np.ndarray,
    rng: np.random.Generator,
) -> CropParams:
    """Where to crop one person: the padded box, then (if `aug`) Simple Baselines' random draws.

    Args:
        box_xywh: (4,) image px. keypoints: (K, 3) image px + flag v.
        image_width: needed to mirror the centre (x -> width - 1 - x).
        upper, lower: joint indices of each half (`body_halves`).
    Returns:
        CropParams with `center` already mirrored when `flipped` (as Simple Baselines).
    """
    center, scale = box_to_center_scale(box_xywh, aspect_ratio)
    if aug is None:
        return CropParams(center, scale, 0.0, False)
    labelled = keypoints[:, 2] > 0
    if labelled.sum() > aug.half_body_min_joints and rng.random() < aug.half_body_prob:
        half = half_body_box(keypoints[:, :2], labelled, upper, lower, aspect_ratio, rng)
        if half is not None:
            center, scale = half
    f = aug.scale_factor
    scale = scale * np.float32(np.clip(rng.standard_normal() * f + 1, 1 - f, 1 + f))
    rotation = 0.0
    if rng.random() < aug.rotation_prob:
        rotation = float(np.clip(rng.standard_normal() * aug.rotation_deg, -2 * aug.rotation_deg, 2 * aug.rotation_deg))
    flipped = bool(aug.flip and rng.random() < 0.5)
    if flipped:
        center = np.array([image_width - 1 - center[0], center[1]], dtype=np.float32)
    return CropParams(center, scale.astype(np.float32), rotation, flipped)


def half_body_box(
    joints: np.ndarray,
    labelled: np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray,
    aspect_ratio: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre and scale of a box around the labelled upper (or lower) body joints, or None.

    Simple Baselines picks the upper half with `np.random.randn() < 0.5` (69 %, a typo for rand);
    here it is a fair coin. A half needs more than two labelled joints to be chosen.
    """
    upper = upper[labelled[upper]]
    lower = lower[labelled[lower]]
    if rng.random() < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    points = joints[chosen]
    center = points.mean(axis=0).astype(np.float32)
    w, h = points.max(axis=0) - points.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h], dtype=np.float32) * HALF_BODY_PADDING


# ------------------------------------------------------------------------------------------------
# Dataset
# ------------------------------------------------------------------------------------------------

class CropMeta(NamedTuple):
    """What maps a crop's predictions back to the image. DataLoader collation stacks each field."""

    image_id: int
    ann_id: int  # -1 for a detected box
    score: float  # box score: 1 for ground-truth boxes
    center: np.ndarray  # (2,) float32 image px (mirrored image's px when flipped)
    scale: np.ndarray  # (2,) float32 crop (w, h) in image px
    rotation_deg: float
    flipped: bool  # training only: the crop came from the mirrored image


def concat_metas(metas: Sequence[CropMeta]) -> CropMeta:
    """Metas of several samples or DataLoader batches -> one CropMeta of NumPy arrays, in order.

    Single samples (scalar image_id) are stacked; collated batches (tensors) are concatenated.
    """
    if not metas:
        raise ValueError("concat_metas needs at least one meta")
    join = np.stack if np.ndim(np.asarray(metas[0].image_id)) == 0 else np.concatenate
    return CropMeta(*(join([np.asarray(getattr(m, field)) for m in metas]) for field in CropMeta._fields))


class TopDownDataset(torch.utils.data.Dataset):
    """People -> {image, target, target_weight, meta} for Simple Pose training and evaluation.

    Each sample: `image` (3, H, W) float32 tensor, RGB normalised by mean/std; `target` (K, h, w)
    float32 tensor of Gaussians; `target_weight` (K, 1) float32 tensor; `meta` a `CropMeta`.

    Randomness is drawn from a generator seeded by (seed, epoch, index): the same sample gets the
    same augmentation whatever the number of DataLoader workers, and a resumed run repeats an
    uninterrupted one. Call `set_epoch(epoch)` before each epoch (as with DistributedSampler); the
    DataLoader must not keep persistent workers, whose dataset copies would not see the new epoch.
    """

    def __init__(
        self,
        people: Sequence[Person],
        pose_config: PoseConfig,
        input_size: tuple[int, int] = (256, 192),
        heatmap_size: tuple[int, int] | None = None,
        sigma: float = 2.0,
        train: bool = True,
        aug: TopDownAugmentation = TopDownAugmentation(),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        box_scores: Sequence[float] | None = None,
        seed: int = 0,
    ):
        """
        Args:
            people: `data.coco.load_coco(...).people`, or `people_from_detections(...).people`.
            input_size: (H, W) of the crop; heatmap_size: (h, w), default input / 4.
            sigma: target Gaussian sigma in heatmap px.
            train: draw augmentations; False gives the plain padded box (evaluation).
            box_scores: one per person (detections); default 1.
        """
        if box_scores is not None and len(box_scores) != len(people):
            raise ValueError(f"box_scores has {len(box_scores)} values for {len(people)} people")
        self.people = list(people)
        self.pose_config = pose_config
        self.input_size = tuple(input_size)
        self.heatmap_size = tuple(heatmap_size) if heatmap_size else (input_size[0] // 4, input_size[1] // 4)
        self.sigma = sigma
        self.stride = np.array([self.input_size[1] / self.heatmap_size[1], self.input_size[0] / self.heatmap_size[0]])
        self.train = train
        self.aug = aug
        # (x / 255 - mean) / std for all 256 values of each channel: a table lookup per pixel is
        # cheaper than the float arithmetic, and gives the same float32 values.
        scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).astype(np.float32)
        offset = (-np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).astype(np.float32)
        self._pixel_table = np.arange(256, dtype=np.float32)[None, :] * scale[:, None] + offset[:, None]  # (3, 256)
        self.box_scores = np.ones(len(people), dtype=np.float32) if box_scores is None else np.asarray(box_scores, np.float32)
        self.upper, self.lower = body_halves(pose_config.keypoints)
        self.flip_order = np.arange(pose_config.num_joints)
        for left, right in pose_config.flip_pairs:
            self.flip_order[left], self.flip_order[right] = right, left
        self.seed = seed
        self.epoch = 0
        self.skipped: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.people)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return redraw_on_bad_sample(lambda i: self._sample(i, rng), index, len(self), rng, self.skipped)

    def _sample(self, index: int, rng: np.random.Generator) -> dict:
        person = self.people[index]
        image = read_image(person.image_path)
        out_h, out_w = self.input_size
        params = draw_crop_params(
            person.bbox, person.keypoints, image.shape[1], out_w / out_h,
            self.aug if self.train else None, self.upper, self.lower, rng,
        )
        matrix = affine_transform_matrix(params.center, params.scale, params.rotation_deg, self.input_size)
        image_matrix = matrix
        joints = person.keypoints[:, :2].astype(np.float64)
        visible = person.keypoints[:, 2]
        if params.flipped:
            # The image is mirrored by a matrix folded into the crop's: one warpAffine, no
            # full-size mirrored copy. The joints are mirrored first, as Simple Baselines does.
            image_matrix = matrix @ mirror_matrix(image.shape[1])
            joints = transform_points(joints, mirror_matrix(image.shape[1]))[self.flip_order]
            visible = visible[self.flip_order]
        crop = cv2.warpAffine(image, image_matrix, (out_w, out_h), flags=cv2.INTER_LINEAR)
        joints_hm = transform_points(joints, matrix) / self.stride
        target, weight = gaussian_heatmaps(joints_hm, visible, self.heatmap_size, self.sigma)
        pixels = np.stack([self._pixel_table[c][crop[..., c]] for c in range(3)])  # (3, H, W) float32
        return {
            "image": torch.from_numpy(pixels),
            "target": torch.from_numpy(target),
            "target_weight": torch.from_numpy(weight[:, None]),
            "meta": CropMeta(
                image_id=person.image_id,
                ann_id=person.ann_id,
                score=float(self.box_scores[index]),
                center=params.center,
                scale=params.scale,
                rotation_deg=params.rotation_deg,
                flipped=params.flipped,
            ),
        }


# ------------------------------------------------------------------------------------------------
# Detected boxes
# ------------------------------------------------------------------------------------------------

class Detections(NamedTuple):
    people: list[Person]  # keypoints all zero, ann_id -1
    scores: np.ndarray  # (P,) float32 box scores, for TopDownDataset(box_scores=...)
    skipped: Counter  # reason -> count


def people_from_detections(
    detections_json: str | Path,
    images: Sequence[ImageRecord],
    num_joints: int,
    score_threshold: float = 0.0,
    category_id: int = 1,
) -> Detections:
    """Person boxes from a COCO results file (e.g. COCO_val2017_detections_AP_H_56_person.json).

    Args:
        detections_json: list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}, read
            by `detections.read_detections` (its policy: a malformed entry is BadInput).
        images: the evaluation set's images (`load_coco(...).images`): paths and sizes; a box on
            an image not in it (missing file, another split) is skipped and counted.
        score_threshold: boxes scoring below it are dropped (not counted as bad).
        category_id: the person category; other categories are ignored.

    Raises:
        BadInput: the file is missing, not JSON, not a list of detections, or has a malformed entry.
    """
    path = Path(detections_json)
    by_id = {record.image_id: record for record in images}
    people: list[Person] = []
    scores: list[float] = []
    skipped: Counter = Counter()
    empty_keypoints = np.zeros((num_joints, 3), dtype=np.float32)
    for detection in read_detections(path, score_threshold, category_id):
        record = by_id.get(detection.image_id)
        if record is None:
            skipped["box on an image not in the annotations (or its file is missing)"] += 1
            continue
        x, y, w, h = (float(v) for v in detection.box_xywh)
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(record.width)), min(y + h, float(record.height))
        if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
            skipped["box empty or outside its image"] += 1
            continue
        box = np.array([x0, y0, x1 - x0, y1 - y0], dtype=np.float32)
        people.append(
            Person(
                image_id=record.image_id, ann_id=-1, image_path=record.image_path, bbox=box,
                keypoints=empty_keypoints, area=float(box[2] * box[3]), iscrowd=False, num_keypoints=0,
            )
        )
        scores.append(detection.score)
    for reason, count in skipped.items():
        log.warning("%s: skipped %d boxes: %s", path, count, reason)
    return Detections(people, np.asarray(scores, dtype=np.float32), skipped)
