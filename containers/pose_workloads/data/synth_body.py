"""The synthetic people's body model (data/synth.py draws and annotates them): named joints,
random poses within human joint ranges, views (facing the camera or turned away) and placement.

Lengths are fractions of standing height; the pelvis is at the origin, x to the image right, y
down. Angles are measured from straight down, positive towards image right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
