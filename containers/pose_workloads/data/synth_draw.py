"""Drawing the synthetic people (data/synth_body.py) and their backgrounds. Every shape goes on
the image (anti-aliased) and on an occupancy map of owner ids, so occlusion flags and
segmentations come from what was actually drawn."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pose_workloads.data.synth_body import HEAD_H, HEAD_W, HIP_HALF, PART, SHOULDER_HALF, SKIN_TONES, Figure, direction

SHIFT = 4  # cv2 fixed-point bits: shapes placed to 1/16 px
ONE = 1 << SHIFT


def _fx(xy) -> np.ndarray:
    return np.round(np.asarray(xy, dtype=np.float64) * ONE).astype(np.int32)


def fixed_point(xy) -> tuple[int, int]:
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


def clipped_colour(values) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(values, 0, 255))


def side_tone(colour: tuple, side: str) -> tuple[float, float, float]:
    """A person's left sleeve and trouser leg are a lighter tone of the garment, the right a darker
    one: a cue that tells left from right from any side (a real person's sides look alike, which
    a small CPU model cannot learn in minutes), and limbs that stand out against the torso."""
    c = np.array(colour)
    return clipped_colour(c + (255 - c) * 0.5 if side == "left" else c * 0.45)


def random_style(rng: np.random.Generator) -> Style:
    # Mid tones, so both the lighter and the darker side tone differ from the garment itself.
    return Style(
        skin=clipped_colour(SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 8, 3)),
        shirt=clipped_colour(rng.uniform(50, 200, 3)),
        trousers=clipped_colour(rng.uniform(40, 190, 3)),
        hair=clipped_colour(rng.uniform(10, 90, 3) if rng.random() < 0.8 else rng.uniform(120, 220, 3)),
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

    seam = clipped_colour(np.array(style.shirt) * 0.25)

    def arm(side):
        sleeve = side_tone(style.shirt, side)
        limb(f"{side}_upper_arm", f"{side}_shoulder", f"{side}_elbow", 0.034, 0.027, sleeve, seam)
        limb(f"{side}_forearm", f"{side}_elbow", f"{side}_wrist", 0.027, 0.021,
             sleeve if style.long_sleeves else style.skin, seam)
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
    trousers = [outline[1] + (outline[2] - outline[1]) * belt, outline[2], outline[3],
                outline[4] + (outline[3] - outline[4]) * belt]
    cv2.fillConvexPoly(image, _fx(trousers), style.trousers, cv2.LINE_AA, SHIFT)
    discs.extend((x, y, 0.0) for x, y in outline)
    limb("neck", "neck", "head", 0.028, 0.026, style.skin)
    if not view.profile:
        arm(far)
    arm(near)
    # Head: an ellipse along the head axis; hair on top, or all over when seen from behind.
    centre, axes = fixed_point(px["head"]), (max(1, int(HEAD_W / 2 * u * ONE)), max(1, int(HEAD_H / 2 * u * ONE)))
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
                cv2.circle(image, fixed_point(px[name]), dot, (35, 30, 25), -1, cv2.LINE_AA, SHIFT)
        if view.face_flags["nose"] == 2:
            cv2.circle(image, fixed_point(px["nose"]), dot, clipped_colour(np.array(style.skin) * 0.7), -1, cv2.LINE_AA,
                       SHIFT)
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
        colour = clipped_colour(rng.uniform(0, 255, 3))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        kind = rng.integers(4)
        if kind == 0:
            cv2.circle(image, fixed_point((x, y)), int(rng.uniform(0.02, 0.15) * side * ONE), colour, -1, cv2.LINE_AA,
                       SHIFT)
        elif kind == 1:
            w, h = rng.uniform(0.05, 0.4, 2) * side
            cv2.rectangle(image, fixed_point((x, y)), fixed_point((x + w, y + h)), colour, -1, cv2.LINE_AA, SHIFT)
        elif kind == 2:  # a bar about as thick as a limb
            a = np.array([x, y])
            b = a + direction(rng.uniform(0, 2 * math.pi)) * rng.uniform(0.1, 0.4) * side
            cv2.line(image, fixed_point(a), fixed_point(b), colour, int(rng.integers(2, max(3, side // 25))),
                     cv2.LINE_AA, SHIFT)
        else:
            axes = (int(rng.uniform(0.02, 0.12) * side * ONE), int(rng.uniform(0.02, 0.12) * side * ONE))
            cv2.ellipse(image, fixed_point((x, y)), axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA, SHIFT)
    return image

