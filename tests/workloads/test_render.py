"""Skeleton drawing and training curves (pose_workloads.render)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pose_workloads.media import save_image
from pose_workloads.render import draw_skeletons, joint_sides, limb_colours, plot_curves
from pose_workloads.specs import COCO17, PoseConfig


def _standing_person() -> np.ndarray:
    """(1, 17, 3) a frontal COCO-17 person in a 200x160 image, every joint score 1."""
    xy = {
        "nose": (80, 30), "left_eye": (86, 25), "right_eye": (74, 25), "left_ear": (92, 28), "right_ear": (68, 28),
        "left_shoulder": (105, 55), "right_shoulder": (55, 55), "left_elbow": (115, 90), "right_elbow": (45, 90),
        "left_wrist": (120, 120), "right_wrist": (40, 120), "left_hip": (95, 115), "right_hip": (65, 115),
        "left_knee": (98, 150), "right_knee": (62, 150), "left_ankle": (100, 185), "right_ankle": (60, 185),
    }
    return np.array([[(*xy[name], 1.0) for name in COCO17.keypoints]], dtype=np.float32)


def _mean_colour_along(image: np.ndarray, a, b) -> np.ndarray:
    """Mean RGB of the pixels on the middle half of segment a-b."""
    ts = np.linspace(0.3, 0.7, 9)
    points = [(int(round(a[0] + t * (b[0] - a[0]))), int(round(a[1] + t * (b[1] - a[1])))) for t in ts]
    return np.mean([image[y, x] for x, y in points], axis=0)


def test_left_limbs_are_blue_and_right_limbs_are_red():
    image = np.zeros((200, 160, 3), np.uint8)
    person = _standing_person()
    drawn = draw_skeletons(image, person, COCO17, score_threshold=0.5)
    k = {name: i for i, name in enumerate(COCO17.keypoints)}
    left = _mean_colour_along(drawn, person[0, k["left_knee"]], person[0, k["left_ankle"]])
    right = _mean_colour_along(drawn, person[0, k["right_knee"]], person[0, k["right_ankle"]])
    assert left[2] > left[0] + 60  # blue dominates
    assert right[0] > right[2] + 60  # red dominates
    assert not np.array_equal(image, drawn) and image.max() == 0  # input untouched


def test_each_limb_of_a_side_gets_its_own_shade():
    colours = limb_colours(COCO17)
    sides = joint_sides(COCO17)
    left_limbs = [c for (a, b), c in zip(COCO17.skeleton, colours) if sides[a] == sides[b] == "left"]
    assert len(left_limbs) >= 4 and len(set(left_limbs)) == len(left_limbs)


def test_joints_below_the_score_threshold_and_their_limbs_are_not_drawn():
    image = np.zeros((200, 160, 3), np.uint8)
    person = _standing_person()
    k = COCO17.keypoints.index("left_ankle")
    person[0, k, 2] = 0.1
    drawn = draw_skeletons(image, person, COCO17, score_threshold=0.5)
    x, y = person[0, k, :2].astype(int)
    assert drawn[y - 3 : y + 4, x - 3 : x + 4].max() == 0
    hip, knee = (person[0, COCO17.keypoints.index(name), :2] for name in ("left_hip", "left_knee"))
    assert _mean_colour_along(drawn, hip, knee).max() > 0  # thigh drawn
    assert _mean_colour_along(drawn, knee, person[0, k, :2]).max() == 0  # shin not drawn


def test_sides_of_a_custom_joint_set_come_from_names_then_flip_pairs():
    config = PoseConfig(keypoints=["head", "l_hand", "r_hand", "a", "b"], skeleton=[(0, 1), (3, 4)],
                        flip_pairs=[(3, 4)])
    assert joint_sides(config) == ["centre", "left", "right", "left", "right"]
    drawn = draw_skeletons(np.zeros((50, 50, 3), np.uint8), np.full((1, 5, 3), 10.0), config)
    assert drawn.shape == (50, 50, 3)


def test_people_with_the_wrong_joint_count_are_refused():
    with pytest.raises(ValueError):
        draw_skeletons(np.zeros((50, 50, 3), np.uint8), np.zeros((1, 5, 3)), COCO17)


def test_save_image_writes_rgb_as_rgb(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 255  # pure red
    save_image(tmp_path / "red.png", image)
    back = cv2.imread(str(tmp_path / "red.png"))
    assert back[0, 0].tolist() == [0, 0, 255]  # BGR on disk
    assert [p.name for p in tmp_path.iterdir()] == ["red.png"]


def test_plot_curves_draws_loss_lr_and_ap(tmp_path):
    records = [
        {"epoch": e, "loss": 1.0 / e, "loss_parts": {"heatmap": 1.0 / e}, "lr": 1e-3, "heatmap_accuracy": 0.1 * e,
         **({"val": {"AP": 0.2 * e, "AP50": 0.25 * e}} if e % 2 == 0 else {})}
        for e in range(1, 5)
    ]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_curves(metrics, tmp_path / "curves.png")
    png = cv2.imread(str(tmp_path / "curves.png"))
    assert png is not None and png.shape[1] > 2 * png.shape[0]  # three panels side by side
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "metrics.jsonl"]


def test_plot_curves_leaves_out_the_accuracy_panel_when_nothing_measures_accuracy(tmp_path):
    # BodyPoseNet's records: loss, its parts, the learning rate; no validation, no accuracy.
    records = [{"epoch": e, "loss": 1.0 / e, "loss_parts": {"paf": 0.6 / e, "heatmap": 0.4 / e}, "lr": 1e-3}
               for e in range(1, 4)]
    for name, extra in (("bpnet", {}), ("with_accuracy", {"heatmap_accuracy": 0.5})):
        metrics = tmp_path / f"{name}.jsonl"
        metrics.write_text("".join(json.dumps({**r, **extra}) + "\n" for r in records))
        plot_curves(metrics, tmp_path / f"{name}.png")
    two, three = (cv2.imread(str(tmp_path / f"{n}.png")) for n in ("bpnet", "with_accuracy"))
    assert two.shape[0] == three.shape[0]
    assert two.shape[1] < 0.75 * three.shape[1]  # two panels of the same size, not three
