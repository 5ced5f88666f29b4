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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pose_workloads.errors import BadInput
from pose_workloads.progress import track
from pose_workloads.specs import COCO17, PoseConfig, load_pose_config

ANNOTATIONS_FILE = "annotations/person_keypoints.json"
JPEG_QUALITY = 90

# --------------------------------------------------------------------------------------------
# The body model. Lengths are fractions of standing height; the pelvis is at the origin, x to the
# image right, y down. Angles are measured from straight down, positive towards image right.
# --------------------------------------------------------------------------------------------

HEAD_H, HEAD_W = 0.13, 0.10
NECK_LEN = 0.035
TORSO = 0.30
SHOULDER_HALF, HIP_HALF = 0.105, 0.065
UPPER_ARM, FOREARM = 0.17, 0.15
THIGH, SHIN = 0.245, 0.235

# Joints the model can place. Other spellings found in pose configs map onto them.
DRAWABLE_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "head_top", "neck",
)
JOINT_ALIASES = {"head": "head_top", "top_head": "head_top"}  # CrowdPose's and mmpose's names

# Body parts, in the ids the occupancy map stores (offset per person).
PARTS = (
    "torso", "head", "neck",
    "left_upper_arm", "left_forearm", "right_upper_arm", "right_forearm",
    "left_thigh", "left_shin", "right_thigh", "right_shin", "left_foot", "right_foot",
)
PART = {name: i for i, name in enumerate(PARTS)}
PARTS_PER_PERSON = 16

# A joint drawn over by any part not listed here is occluded (v = 1).
JOINT_PARTS = {
    "nose": ("head",), "left_eye": ("head",), "right_eye": ("head",),
    "left_ear": ("head",), "right_ear": ("head",), "head_top": ("head",),
    "neck": ("torso", "neck", "head"),
    "left_shoulder": ("torso", "neck", "left_upper_arm"),
    "right_shoulder": ("torso", "neck", "right_upper_arm"),
    "left_elbow": ("left_upper_arm", "left_forearm"), "right_elbow": ("right_upper_arm", "right_forearm"),
    "left_wrist": ("left_forearm",), "right_wrist": ("right_forearm",),
    "left_hip": ("torso", "left_thigh"), "right_hip": ("torso", "right_thigh"),
    "left_knee": ("left_thigh", "left_shin"), "right_knee": ("right_thigh", "right_shin"),
    "left_ankle": ("left_shin", "left_foot"), "right_ankle": ("right_shin", "right_foot"),
}

# Face features on the head, seen as a sphere: (azimuth from the nose, towards the person's left;
# height on the head as a fraction of HEAD_H; cos(angle to camera) above which it is visible,
# above which it is labelled occluded). Ears stick out, so they stay visible further round.
FACE = {
    "nose": (0.0, -0.12, 0.15, -0.25),
    "left_eye": (0.42, 0.05, 0.15, -0.25),
    "right_eye": (-0.42, 0.05, 0.15, -0.25),
    "left_ear": (1.45, 0.0, -0.35, -0.65),
    "right_ear": (-1.45, 0.0, -0.35, -0.65),
}

# Owner ids above the people's: unlabelled people, crowds, occluders.
UNLABELLED_ID, CROWD_ID, OCCLUDER_ID = 60000, 62000, 65000
MAX_PEOPLE = 50

SKIN_TONES = np.array([(60, 80, 130), (80, 110, 170), (110, 150, 210), (150, 190, 235), (40, 55, 90)], np.float32)


def direction(angle: float) -> np.ndarray:
    """(2,) unit vector at `angle` rad from straight down (image y), positive towards image right."""
    return np.array([math.sin(angle), math.cos(angle)])


def facing_x(yaw: float) -> float:
    """+1 when a person at `yaw` faces image right (their nose is right of their head centre), -1 left."""
    return 1.0 if math.sin(yaw) > 0 else -1.0


@dataclass
class Pose:
    lean: float  # torso from vertical
    tilt: float  # head relative to torso
    yaw: float  # 0 faces the camera, pi shows the back
    head_turn: float
    arm_raise: tuple[float, float]  # left, right: 0 hanging, pi/2 horizontal
    elbow_bend: tuple[float, float]  # signed
    leg_angle: tuple[float, float]  # absolute thigh angles
    knee_bend: tuple[float, float]  # signed
    foreshorten: np.ndarray  # (4, 2) length factors: (upper arm, forearm, thigh, shin) x (left, right)


def sample_pose(rng: np.random.Generator) -> Pose:
    """A random pose within plausible human ranges: mostly standing, some walking, some sitting."""
    # Most people face the camera or turn their back to it (as in photos); the rest from any side.
    view = rng.random()
    if view < 0.5:
        yaw = rng.normal(0.0, 0.4)
    elif view < 0.75:
        yaw = math.pi + rng.normal(0.0, 0.4)
    else:
        yaw = rng.uniform(-math.pi, math.pi)
    yaw = (yaw + math.pi) % (2 * math.pi) - math.pi
    arm_raise = []
    for _ in range(2):
        kind = rng.random()
        if kind < 0.55:
            arm_raise.append(rng.uniform(0.05, 0.6))
        elif kind < 0.85:
            arm_raise.append(rng.uniform(0.6, 1.8))
        else:
            arm_raise.append(rng.uniform(1.8, 3.0))
    elbow_bend = tuple(rng.uniform(0.0, 2.3) * rng.choice((-1.0, 1.0)) for _ in range(2))
    # Legs in image terms: which way the person faces decides where a step or a sit points.
    facing = facing_x(yaw)
    stance = rng.random()
    if stance < 0.65:  # standing
        out = rng.uniform(0.0, 0.3, 2)
        legs = (out[0], -out[1]) if math.cos(yaw) >= 0 else (-out[0], out[1])
        knees = tuple(rng.uniform(-0.3, 0.3, 2))
    elif stance < 0.88:  # walking or running
        stride = rng.uniform(0.2, 0.65)
        legs = (stride * facing, -stride * facing) if rng.random() < 0.5 else (-stride * facing, stride * facing)
        knees = (-facing * rng.uniform(0.0, 1.0), -facing * rng.uniform(0.0, 1.0))
    else:  # sitting or kneeling: thighs forward, shins back down
        thigh = rng.uniform(1.0, 1.6) * facing
        legs = (thigh + rng.normal(0, 0.1), thigh + rng.normal(0, 0.1))
        knees = (-facing * rng.uniform(1.1, 1.9), -facing * rng.uniform(1.1, 1.9))
    foreshorten = np.where(rng.random((4, 2)) < 0.3, rng.uniform(0.6, 1.0, (4, 2)), 1.0)
    if stance >= 0.88:  # thighs forward point at the camera when the person faces it
        foreshorten[2] = max(abs(math.sin(yaw)), 0.35)
    return Pose(
        lean=float(np.clip(rng.normal(0, 0.12), -0.5, 0.5)),
        tilt=float(np.clip(rng.normal(0, 0.15), -0.5, 0.5)),
        yaw=yaw,
        head_turn=float(np.clip(rng.normal(0, 0.3), -0.8, 0.8)),
        arm_raise=tuple(arm_raise),
        elbow_bend=elbow_bend,
        leg_angle=(float(legs[0]), float(legs[1])),
        knee_bend=(float(knees[0]), float(knees[1])),
        foreshorten=foreshorten,
    )


@dataclass
class View:
    """What the camera sees of a posed person."""

    face_flags: dict[str, int]  # per face feature: 2 visible, 1 turned just out of sight, 0 hidden
    facing: bool  # the face, not the back of the head, is towards the camera
    far_side: str  # "left" or "right": the side turned away
    profile: bool  # seen side-on: the far arm goes behind the torso, far shoulder/hip are hidden
    torso_width: float  # apparent torso width: at least its depth when side-on


def body_points(pose: Pose) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], View]:
    """Joint and drawing points in body units (standing height 1, pelvis at 0, y down), the
    torso's and head's rightward axes, and what the camera sees."""
    c = math.cos(pose.yaw)
    up = direction(math.pi + pose.lean)
    right = direction(math.pi / 2 + pose.lean)
    pelvis = np.zeros(2)
    neck = pelvis + TORSO * up
    p = {"neck": neck, "pelvis": pelvis}
    # The person's left is on the image right when they face the camera (cos yaw > 0).
    p["left_shoulder"] = neck + right * SHOULDER_HALF * c
    p["right_shoulder"] = neck - right * SHOULDER_HALF * c
    p["left_hip"] = pelvis + right * HIP_HALF * c
    p["right_hip"] = pelvis - right * HIP_HALF * c
    toe = facing_x(pose.yaw)  # feet point the way the person faces
    for i, side in enumerate(("left", "right")):
        outwards = (1.0 if i == 0 else -1.0) * (1.0 if c >= 0 else -1.0)
        upper = pose.lean + outwards * pose.arm_raise[i]
        fore = upper + pose.elbow_bend[i]
        p[f"{side}_elbow"] = p[f"{side}_shoulder"] + direction(upper) * UPPER_ARM * pose.foreshorten[0, i]
        p[f"{side}_wrist"] = p[f"{side}_elbow"] + direction(fore) * FOREARM * pose.foreshorten[1, i]
        p[f"{side}_hand"] = p[f"{side}_wrist"] + direction(fore) * 0.035
        thigh = pose.leg_angle[i]
        shin = thigh + pose.knee_bend[i]
        p[f"{side}_knee"] = p[f"{side}_hip"] + direction(thigh) * THIGH * pose.foreshorten[2, i]
        p[f"{side}_ankle"] = p[f"{side}_knee"] + direction(shin) * SHIN * pose.foreshorten[3, i]
        # Seen from the front, feet are short.
        foot = 0.02 + 0.05 * abs(math.sin(pose.yaw))
        p[f"{side}_toe"] = p[f"{side}_ankle"] + direction(shin + toe * math.pi / 2) * foot

    head_up = direction(math.pi + pose.lean + pose.tilt)
    head_right = direction(math.pi / 2 + pose.lean + pose.tilt)
    p["head"] = neck + head_up * (NECK_LEN + HEAD_H / 2)
    p["head_top"] = p["head"] + head_up * HEAD_H / 2
    turn = pose.yaw + pose.head_turn
    flags = {}
    for name, (azimuth, height, visible_above, occluded_above) in FACE.items():
        towards_camera = math.cos(azimuth + turn)
        p[name] = p["head"] + head_right * (HEAD_W / 2) * 0.9 * math.sin(azimuth + turn) + head_up * height * HEAD_H
        flags[name] = 2 if towards_camera > visible_above else 1 if towards_camera > occluded_above else 0
    view = View(
        face_flags=flags,
        facing=math.cos(turn) > -0.3,
        # The person's left points away from the camera when sin(yaw) > 0.
        far_side="left" if math.sin(pose.yaw) > 0 else "right",
        profile=abs(c) < 0.4,
        torso_width=max(abs(c), 0.55),
    )
    return p, {"right": right, "head_right": head_right}, view


@dataclass
class Placement:
    centre: np.ndarray  # (2,) px, where the pelvis goes
    height_px: float  # standing height
    rotation: float  # rad, in-plane
    aspect: float  # width stretch


@dataclass
class Figure:
    """A posed person placed in the image."""

    px: dict[str, np.ndarray]  # points, image px
    axes: dict[str, np.ndarray]  # unit rightward axes of torso and head, image px
    unit_px: float  # px per body unit
    view: View


def place_figure(pose: Pose, where: Placement) -> Figure:
    points, axes, view = body_points(pose)
    cos, sin = math.cos(where.rotation), math.sin(where.rotation)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.diag([where.aspect, 1.0]) * where.height_px
    names = list(points)
    moved = np.stack([points[n] for n in names]) @ linear.T + where.centre
    turned = {k: linear @ v for k, v in axes.items()}
    return Figure(
        px=dict(zip(names, moved)),
        axes={k: v / (np.hypot(*v) + 1e-9) for k, v in turned.items()},
        unit_px=where.height_px,
        view=view,
    )


# --------------------------------------------------------------------------------------------
# Drawing. Every shape goes on the image (anti-aliased) and on an occupancy map of owner ids, so
# occlusion flags and segmentations come from what was actually drawn.
# --------------------------------------------------------------------------------------------

SHIFT = 4  # cv2 fixed-point bits: shapes placed to 1/16 px
ONE = 1 << SHIFT


def _fx(xy) -> np.ndarray:
    return np.round(np.asarray(xy, dtype=np.float64) * ONE).astype(np.int32)


def _pt(xy) -> tuple[int, int]:
    x, y = _fx(xy)
    return int(x), int(y)


def _limb(image, owner, a, b, r0, r1, colour, owner_id) -> None:
    """A tapered segment from a (radius r0) to b (radius r1), px, with round ends."""
    # Plain floats: this runs ~60 times an image and numpy's per-call overhead dominated it.
    ax, ay, bx, by = float(a[0]), float(a[1]), float(b[0]), float(b[1])
    length = math.hypot(bx - ax, by - ay) + 1e-6
    nx, ny = (ay - by) / length, (bx - ax) / length
    quad = np.array([
        [ax + nx * r0, ay + ny * r0], [bx + nx * r1, by + ny * r1],
        [bx - nx * r1, by - ny * r1], [ax - nx * r0, ay - ny * r0],
    ])
    quad = np.rint(quad * ONE).astype(np.int32)
    pa, pb = (int(ax * ONE + 0.5), int(ay * ONE + 0.5)), (int(bx * ONE + 0.5), int(by * ONE + 0.5))
    ra, rb = max(1, int(r0 * ONE)), max(1, int(r1 * ONE))
    for target, value, line in ((image, colour, cv2.LINE_AA), (owner, owner_id, cv2.LINE_8)):
        cv2.fillConvexPoly(target, quad, value, line, SHIFT)
        cv2.circle(target, pa, ra, value, -1, line, SHIFT)
        cv2.circle(target, pb, rb, value, -1, line, SHIFT)


@dataclass
class Style:
    skin: tuple
    shirt: tuple
    trousers: tuple
    hair: tuple
    long_sleeves: bool


def _colour(values) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(values, 0, 255))


def side_tone(colour: tuple, side: str) -> tuple[float, float, float]:
    """A person's left sleeve and trouser leg are a lighter tone of the garment, the right a darker
    one: a cue that tells left from right from any side (a real person's sides look alike, which
    a small CPU model cannot learn in minutes), and limbs that stand out against the torso."""
    c = np.array(colour)
    return _colour(c + (255 - c) * 0.5 if side == "left" else c * 0.45)


def random_style(rng: np.random.Generator) -> Style:
    # Mid tones, so both the lighter and the darker side tone differ from the garment itself.
    return Style(
        skin=_colour(SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 8, 3)),
        shirt=_colour(rng.uniform(50, 200, 3)),
        trousers=_colour(rng.uniform(40, 190, 3)),
        hair=_colour(rng.uniform(10, 90, 3) if rng.random() < 0.8 else rng.uniform(120, 220, 3)),
        long_sleeves=bool(rng.random() < 0.5),
    )


def draw_figure(image, owner, fig: Figure, style: Style, owner_ids, face_details: bool = True) -> np.ndarray:
    """Draw one person back to front. `owner_ids[PART[name]]` is what each part writes on the
    occupancy map. Returns (N, 3) float64 discs (x, y, radius px) whose union covers the person."""
    px, u, view = fig.px, fig.unit_px, fig.view
    discs: list[tuple[float, float, float]] = []

    edge = max(0.6 / max(u, 1.0), 0.006)  # outline width, body units: at least ~0.6 px

    def limb(part, a, b, r0, r1, colour, outline=None):
        owner_id = int(owner_ids[PART[part]])
        if outline is not None:  # a dark seam round the limb: an arm in front of the body shows
            _limb(image, owner, px[a], px[b], (r0 + edge) * u, (r1 + edge) * u, outline, owner_id)
        _limb(image, owner, px[a], px[b], r0 * u, r1 * u, colour, owner_id)
        grow = edge if outline is not None else 0.0
        discs.extend(((*px[a], (r0 + grow) * u), (*px[b], (r1 + grow) * u)))

    seam = _colour(np.array(style.shirt) * 0.25)

    def arm(side):
        sleeve = side_tone(style.shirt, side)
        limb(f"{side}_upper_arm", f"{side}_shoulder", f"{side}_elbow", 0.034, 0.027, sleeve, seam)
        limb(f"{side}_forearm", f"{side}_elbow", f"{side}_wrist", 0.027, 0.021, sleeve if style.long_sleeves else style.skin, seam)
        limb(f"{side}_forearm", f"{side}_wrist", f"{side}_hand", 0.023, 0.021, style.skin)

    def leg(side):
        trouser_leg = side_tone(style.trousers, side)
        limb(f"{side}_thigh", f"{side}_hip", f"{side}_knee", 0.05, 0.036, trouser_leg, seam)
        limb(f"{side}_shin", f"{side}_knee", f"{side}_ankle", 0.036, 0.026, trouser_leg, seam)
        shoe = (225.0, 225.0, 225.0) if side == "left" else (25.0, 25.0, 25.0)  # light left, dark right
        limb(f"{side}_foot", f"{side}_ankle", f"{side}_toe", 0.024, 0.02, shoe)

    far = view.far_side
    near = "right" if far == "left" else "left"
    leg(far)
    leg(near)
    if view.profile:
        arm(far)
    # Torso: shoulders, waist, hips, as wide as the view shows; trousers over the lower part.
    right = fig.axes["right"] * view.torso_width * u
    waist = px["pelvis"] + (px["neck"] - px["pelvis"]) * 0.4
    outline = np.array([
        px["neck"] + right * (SHOULDER_HALF + 0.03),
        waist + right * 0.085,
        px["pelvis"] + right * (HIP_HALF + 0.045),
        px["pelvis"] - right * (HIP_HALF + 0.045),
        waist - right * 0.085,
        px["neck"] - right * (SHOULDER_HALF + 0.03),
    ])
    cv2.fillPoly(image, [_fx(outline)], style.shirt, cv2.LINE_AA, SHIFT)
    cv2.fillPoly(owner, [_fx(outline)], int(owner_ids[PART["torso"]]), cv2.LINE_8, SHIFT)
    belt = 0.5
    trousers = [outline[1] + (outline[2] - outline[1]) * belt, outline[2], outline[3], outline[4] + (outline[3] - outline[4]) * belt]
    cv2.fillConvexPoly(image, _fx(trousers), style.trousers, cv2.LINE_AA, SHIFT)
    discs.extend((x, y, 0.0) for x, y in outline)
    limb("neck", "neck", "head", 0.028, 0.026, style.skin)
    if not view.profile:
        arm(far)
    arm(near)
    # Head: an ellipse along the head axis; hair on top, or all over when seen from behind.
    centre, axes = _pt(px["head"]), (max(1, int(HEAD_W / 2 * u * ONE)), max(1, int(HEAD_H / 2 * u * ONE)))
    angle = math.degrees(math.atan2(fig.axes["head_right"][1], fig.axes["head_right"][0]))
    cv2.ellipse(image, centre, axes, angle, 0, 360, style.skin, -1, cv2.LINE_AA, SHIFT)
    cv2.ellipse(owner, centre, axes, angle, 0, 360, int(owner_ids[PART["head"]]), -1, cv2.LINE_8, SHIFT)
    hair_from = 180 if view.facing else 0
    cv2.ellipse(image, centre, axes, angle, hair_from, 360, style.hair, -1, cv2.LINE_AA, SHIFT)
    discs.append((*px["head"], HEAD_H / 2 * u))
    if face_details and view.facing and u > 24:
        dot = max(ONE, int(0.011 * u * ONE))
        for name in ("left_eye", "right_eye"):
            if view.face_flags[name] == 2:
                cv2.circle(image, _pt(px[name]), dot, (35, 30, 25), -1, cv2.LINE_AA, SHIFT)
        if view.face_flags["nose"] == 2:
            cv2.circle(image, _pt(px["nose"]), dot, _colour(np.array(style.skin) * 0.7), -1, cv2.LINE_AA, SHIFT)
    return np.array(discs)


def draw_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 BGR: a colour gradient, blotchy low-frequency noise and clutter shapes
    (some limb-like bars and blobs, so a detector cannot key on "anything that is not flat")."""
    # Gradient and blotches on a coarse grid, one bicubic resize up: a few cv2 calls, no full-size
    # float maths (this is the hottest part of an image).
    rows, cols = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(0, 1, cols)[None, :] * math.cos(angle) + np.linspace(0, 1, rows)[:, None] * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    grid = c0 + ramp[..., None] * (c1 - c0) + rng.normal(0, rng.uniform(8, 40), (rows, cols, 3))
    grid = np.clip(grid, 0, 255).astype(np.uint8)
    image = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    side = min(height, width)
    for _ in range(int(rng.integers(4, 14))):
        colour = _colour(rng.uniform(0, 255, 3))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        kind = rng.integers(4)
        if kind == 0:
            cv2.circle(image, _pt((x, y)), int(rng.uniform(0.02, 0.15) * side * ONE), colour, -1, cv2.LINE_AA, SHIFT)
        elif kind == 1:
            w, h = rng.uniform(0.05, 0.4, 2) * side
            cv2.rectangle(image, _pt((x, y)), _pt((x + w, y + h)), colour, -1, cv2.LINE_AA, SHIFT)
        elif kind == 2:  # a bar about as thick as a limb
            a = np.array([x, y])
            b = a + direction(rng.uniform(0, 2 * math.pi)) * rng.uniform(0.1, 0.4) * side
            cv2.line(image, _pt(a), _pt(b), colour, int(rng.integers(2, max(3, side // 25))), cv2.LINE_AA, SHIFT)
        else:
            axes = (int(rng.uniform(0.02, 0.12) * side * ONE), int(rng.uniform(0.02, 0.12) * side * ONE))
            cv2.ellipse(image, _pt((x, y)), axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA, SHIFT)
    return image


# --------------------------------------------------------------------------------------------
# One image and its annotations.
# --------------------------------------------------------------------------------------------

def _random_placement(rng: np.random.Generator, width: int, height: int, height_px: float, upright: bool = True) -> Placement:
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
            where = Placement(centre + rng.normal(0, 1, 2) * spread, rng.uniform(0.1, 0.2) * height, float(rng.normal(0, 0.1)), float(rng.uniform(0.8, 1.2)))
            figures.append(where)
        for where in sorted(figures, key=lambda p: p.centre[1]):
            draw_figure(image, owner, place_figure(sample_pose(rng), where), random_style(rng), np.full(len(PARTS), CROWD_ID), face_details=False)
        gap = 2 * (min(width, height) // 60) + 3
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (gap, gap))
        crowd = cv2.morphologyEx((owner == CROWD_ID).astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)

    # Small people nobody labelled (COCO has many): num_keypoints 0.
    for j in range(int(rng.integers(1, 3)) if not easy and rng.random() < 0.25 else 0):
        where = _random_placement(rng, width, height, rng.uniform(0.08, 0.2) * height)
        discs = draw_figure(image, owner, place_figure(sample_pose(rng), where), random_style(rng), np.full(len(PARTS), UNLABELLED_ID + j), face_details=False)
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
        colour = _colour(rng.uniform(0, 255, 3))
        w, h = rng.uniform(0.08, 0.3, 2) * min(width, height)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        if rng.random() < 0.5:
            for target, value in ((image, colour), (owner, OCCLUDER_ID)):
                cv2.rectangle(target, _pt((x, y)), _pt((x + w, y + h)), value, -1, cv2.LINE_8, SHIFT)
        else:
            axes = (int(w / 2 * ONE), int(h / 2 * ONE))
            for target, value in ((image, colour), (owner, OCCLUDER_ID)):
                cv2.ellipse(target, _pt((x + w / 2, y + h / 2)), axes, 0, 0, 360, value, -1, cv2.LINE_8, SHIFT)

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

    `size` is (width, height); `easy` draws the demo's easier scenes (see `render_image`). The annotation file is removed first and written last (tmp +
    os.replace), so a run that is killed leaves no file that looks complete. Returns `out_dir`.
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
    """`pose dataset synth -o DIR [--images N] [--seed S] [--max_people K] [--size WxH] [--pose_config JSON] [--easy]`."""
    size = parse_size(args.size)
    pose_config = load_pose_config(args.pose_config)
    out = write_synthetic_dataset(args.output, args.images, args.seed, args.max_people, size, pose_config, easy=args.easy)
    print(f"wrote {args.images} images to {out / 'images'} and their annotations to {out / ANNOTATIONS_FILE}")
    return 0
