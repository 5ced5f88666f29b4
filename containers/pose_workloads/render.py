"""Pictures: skeletons drawn on images (OpenCV) and training curves (matplotlib, Agg).

Colours follow the body side so a left/right swap is visible at a glance: limbs and joints on the
left are blues, on the right oranges/reds, on the midline greens; each limb gets its own shade.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pose_workloads.files import atomic_path
from pose_workloads.specs import PoseConfig

# Hue ranges (OpenCV hue, 0..179) per side: blue, orange-red, green.
_SIDE_HUES = {"left": (95, 125), "right": (0, 20), "centre": (40, 75)}


def joint_sides(pose_config: PoseConfig) -> list[str]:
    """"left", "right" or "centre" per joint: from the joint name ("left_eye", "l_hip"), else from
    `flip_pairs` (first of a pair = left, as COCO's (left_eye, right_eye))."""
    sides = []
    for name in pose_config.keypoints:
        low = name.lower()
        if low.startswith(("left", "l_")) or low.endswith(("_left", "_l")):
            sides.append("left")
        elif low.startswith(("right", "r_")) or low.endswith(("_right", "_r")):
            sides.append("right")
        else:
            sides.append("")
    for a, b in pose_config.flip_pairs:
        if not sides[a] and not sides[b]:
            sides[a], sides[b] = "left", "right"
    return [s or "centre" for s in sides]


def _shades(side: str, count: int) -> list[tuple[int, int, int]]:
    """`count` distinct RGB colours within `side`'s hue range."""
    low, high = _SIDE_HUES[side]
    hues = np.linspace(low, high, max(count, 1)).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 230), np.full_like(hues, 255)], axis=1)[None]
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    return [tuple(int(c) for c in colour) for colour in rgb][:count]


def limb_colours(pose_config: PoseConfig) -> list[tuple[int, int, int]]:
    """One RGB colour per skeleton limb, in `pose_config.skeleton` order."""
    sides = joint_sides(pose_config)
    limb_side = []
    for a, b in pose_config.skeleton:
        limb_side.append(sides[a] if sides[a] == sides[b] else "centre")
    palette = {side: iter(_shades(side, limb_side.count(side))) for side in _SIDE_HUES}
    return [next(palette[side]) for side in limb_side]


def joint_colours(pose_config: PoseConfig) -> list[tuple[int, int, int]]:
    base = {side: _shades(side, 1)[0] for side in _SIDE_HUES}
    return [base[side] for side in joint_sides(pose_config)]


def draw_skeletons(
    image_rgb: np.ndarray,
    people: np.ndarray,
    pose_config: PoseConfig,
    score_threshold: float = 0.2,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Draw people on a copy of an image.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        people: (N, K, 3) float, per joint (x, y, score) in image px; K = pose_config.num_joints.
        pose_config: joint names (for sides) and skeleton.
        score_threshold: joints scoring below it, and limbs touching them, are not drawn.
        boxes: optional (N, 4) float person boxes x, y, w, h in image px, drawn thin grey.

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    canvas = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    people = np.asarray(people, dtype=np.float32).reshape(-1, pose_config.num_joints, 3)
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 160))
    radius = thickness + 1
    limb_rgb = limb_colours(pose_config)
    joint_rgb = joint_colours(pose_config)
    if boxes is not None:
        for x, y, w, h in np.asarray(boxes, dtype=np.float32).reshape(-1, 4):
            cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), (160, 160, 160), 1, cv2.LINE_AA)
    for person in people:
        shown = person[:, 2] >= score_threshold
        points = np.round(person[:, :2]).astype(np.int32)
        for (a, b), colour in zip(pose_config.skeleton, limb_rgb):
            if shown[a] and shown[b]:
                cv2.line(canvas, tuple(map(int, points[a])), tuple(map(int, points[b])), colour, thickness, cv2.LINE_AA)
        for k in np.flatnonzero(shown):
            centre = tuple(map(int, points[k]))
            # A white rim keeps joints visible on limbs of the same colour and on busy backgrounds.
            cv2.circle(canvas, centre, radius + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(canvas, centre, radius, joint_rgb[k], -1, cv2.LINE_AA)
    return canvas


def plot_curves(metrics_jsonl: str | Path, out_png: str | Path) -> None:
    """Training curves from metrics.jsonl: loss (and its parts), learning rate, and the accuracy
    numbers (validation AP, training heatmap accuracy) against epoch. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    epochs = [r["epoch"] for r in records]
    val_keys = [k for k in ("AP", "AP50", "AP75") if any(k in r.get("val", {}) for r in records)]
    train_keys = sorted({k for r in records for k, v in r.items() if k.endswith("accuracy") and isinstance(v, float)})
    # No accuracy panel for a run that measures none (BodyPoseNet trains without validation).
    accuracy = bool(val_keys or train_keys)
    fig, axes = plt.subplots(1, 3 if accuracy else 2, figsize=(13 if accuracy else 8.7, 3.6))

    ax_loss, ax_lr = axes[0], axes[1]
    ax_loss.plot(epochs, [r["loss"] for r in records], marker=".", label="loss")
    parts = sorted({k for r in records for k in r.get("loss_parts", {})})
    if len(parts) > 1:
        for part in parts:
            ax_loss.plot(epochs, [r.get("loss_parts", {}).get(part, np.nan) for r in records], lw=1, label=part)
    if all(r["loss"] > 0 for r in records):
        ax_loss.set_yscale("log")
    ax_loss.set_title("training loss")

    ax_lr.plot(epochs, [r["lr"] for r in records], marker=".")
    ax_lr.set_yscale("log")
    ax_lr.set_title("learning rate (end of epoch)")

    if accuracy:
        ax_acc = axes[2]
        for key in val_keys:
            points = [(r["epoch"], r["val"][key]) for r in records if key in r.get("val", {})]
            ax_acc.plot(*zip(*points), marker="o", label=f"val {key}")
        for key in train_keys:
            ax_acc.plot(epochs, [r.get(key, np.nan) for r in records], marker=".", ls="--", label=f"train {key}")
        ax_acc.set_ylim(0, 1)
        ax_acc.set_title("accuracy")

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
    finally:
        plt.close(fig)
