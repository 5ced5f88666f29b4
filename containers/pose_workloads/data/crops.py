"""Where a top-down crop comes from: the person box grown to the model's aspect ratio and padded,
Simple Baselines' augmentation draws (scale, rotation, mirror, half body), and the affine that maps
image px to crop px.

Coordinate spaces: image px of the original image; input px of the crop (input_size). All x right,
y down, pixel (i, j) centred at x=j, y=i, as OpenCV.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

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
