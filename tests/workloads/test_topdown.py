"""Top-down samples (data/topdown.py, data/crops.py): crop geometry, augmentation, targets, detections."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose_workloads.data.coco import ImageRecord, Person, load_coco
from pose_workloads.data.crops import (
    TopDownAugmentation,
    affine_transform_matrix,
    body_halves,
    box_to_center_scale,
    transform_points,
)
from pose_workloads.data.topdown import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TopDownDataset,
    concat_metas,
    people_from_detections,
)
from pose_workloads.decode import decode_heatmaps
from pose_workloads.errors import BadInput
from pose_workloads.specs import COCO17, PoseConfig

INPUT = (64, 48)  # tiny crops keep these tests fast; heatmaps 16 x 12
CROWDPOSE = PoseConfig(
    name="crowdpose14",
    keypoints=[
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
    ],
    flip_pairs=[(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)],
)


def blob_image(path: Path, points: list[tuple[float, float]], size=(240, 320), channel: int = 0) -> Path:
    """A black RGB image with a smooth bright blob (sigma 4 px) at each point, written as PNG."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w]
    rgb = np.zeros((h, w, 3), dtype=np.float64)
    for x, y in points:
        rgb[..., channel] += 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 4.0**2))
    cv2.imwrite(str(path), np.clip(rgb, 0, 255).astype(np.uint8)[..., ::-1])  # OpenCV writes BGR
    return path


def person(path: Path, keypoints: np.ndarray, bbox=(100, 60, 120, 120), image_id=1, ann_id=7) -> Person:
    keypoints = np.asarray(keypoints, dtype=np.float32)
    return Person(
        image_id=image_id, ann_id=ann_id, image_path=str(path), bbox=np.asarray(bbox, dtype=np.float32),
        keypoints=keypoints, area=float(bbox[2] * bbox[3]), iscrowd=False,
        num_keypoints=int(np.count_nonzero(keypoints[:, 2])),
    )


def one_joint(index: int, x: float, y: float, num_joints: int = 17) -> np.ndarray:
    keypoints = np.zeros((num_joints, 3), dtype=np.float32)
    keypoints[index] = x, y, 2
    return keypoints


def test_box_to_center_scale_fits_the_aspect_ratio_then_pads():
    center, scale = box_to_center_scale((10, 20, 100, 100), aspect_ratio=0.75)
    np.testing.assert_allclose(center, [60, 70])
    np.testing.assert_allclose(scale, [125, 100 / 0.75 * 1.25], rtol=1e-6)
    _, scale = box_to_center_scale((0, 0, 30, 120), aspect_ratio=0.75)
    np.testing.assert_allclose(scale, [90 * 1.25, 150], rtol=1e-6)


@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_affine_sends_the_centre_to_the_crop_centre_and_the_crop_width_across(rotation):
    center, scale = np.array([200.0, 150.0]), np.array([96.0, 128.0])
    matrix = affine_transform_matrix(center, scale, rotation, (256, 192))
    theta = np.deg2rad(rotation)
    # The box's "up" direction, rotated with the crop, ends at the crop's top edge.
    top = center + 0.5 * scale[1] * np.array([np.sin(theta), -np.cos(theta)])
    np.testing.assert_allclose(transform_points(np.array([center, top]), matrix), [[96, 128], [96, 0]], atol=1e-3)
    inverse = affine_transform_matrix(center, scale, rotation, (256, 192), inverse=True)
    np.testing.assert_allclose(transform_points(transform_points(np.array([top]), matrix), inverse), [top], atol=1e-3)


def test_sample_is_a_normalised_rgb_crop_with_targets_and_meta(tmp_path):
    path = blob_image(tmp_path / "a.png", [(160, 120)], channel=0)
    ds = TopDownDataset([person(path, one_joint(0, 160, 120))], COCO17, input_size=INPUT, train=False)
    sample = ds[0]
    image, target, weight, meta = sample["image"], sample["target"], sample["target_weight"], sample["meta"]
    assert image.shape == (3, 64, 48) and image.dtype == torch.float32
    assert target.shape == (17, 16, 12) and target.dtype == torch.float32
    assert weight.shape == (17, 1) and weight.dtype == torch.float32
    assert weight[:, 0].tolist() == [1.0] + [0.0] * 16
    # Red blob in channel 0 (RGB order), nothing in blue; black is (0 - mean) / std.
    assert image[0].max() > image[2].max()
    np.testing.assert_allclose(image[2].numpy(), -IMAGENET_MEAN[2] / IMAGENET_STD[2], atol=1e-5)
    assert (meta.image_id, meta.ann_id, meta.score, meta.rotation_deg, meta.flipped) == (1, 7, 1.0, 0.0, False)
    center, scale = box_to_center_scale((100, 60, 120, 120), 48 / 64)
    np.testing.assert_allclose(meta.center, center)
    np.testing.assert_allclose(meta.scale, scale)


def test_crop_pixels_and_targets_follow_the_joint_through_scale_rotation_and_flip(tmp_path):
    # The blob drawn at the joint must show up in the crop where the target puts the joint:
    # image and joints go through the same matrix, mirrored or not.
    joint = (170.0, 100.0)
    path = blob_image(tmp_path / "a.png", [joint], channel=1)
    aug = TopDownAugmentation(scale_factor=0.3, rotation_deg=40, rotation_prob=1.0, flip=True, half_body_prob=0.0)
    ds = TopDownDataset([person(path, one_joint(9, *joint))], COCO17, input_size=(128, 96), train=True, aug=aug)
    seen_flipped = seen_straight = 0
    for epoch in range(8):
        ds.set_epoch(epoch)
        sample = ds[0]
        meta = sample["meta"]
        channel = 10 if meta.flipped else 9  # left wrist becomes the right wrist in a mirror
        assert sample["target_weight"][channel, 0] == 1.0
        assert sample["target_weight"].sum() == 1.0
        coords, _ = decode_heatmaps(sample["target"].numpy()[None], "dark")
        joint_input_px = coords[0, channel] * 4
        green = sample["image"][1].numpy()
        green = green - green.min()
        ys, xs = np.mgrid[0 : green.shape[0], 0 : green.shape[1]]
        centroid = np.array([(xs * green).sum(), (ys * green).sum()]) / green.sum()
        np.testing.assert_allclose(centroid, joint_input_px, atol=0.6)
        seen_flipped += meta.flipped
        seen_straight += not meta.flipped
        assert meta.rotation_deg != 0.0
    assert seen_flipped and seen_straight


def test_same_seed_epoch_and_index_give_the_same_augmentation(tmp_path):
    path = blob_image(tmp_path / "a.png", [(160, 120)])
    people = [person(path, one_joint(0, 160, 120))]
    first = TopDownDataset(people, COCO17, input_size=INPUT, seed=3)
    again = TopDownDataset(people, COCO17, input_size=INPUT, seed=3)
    draws = []
    for epoch in range(4):
        first.set_epoch(epoch)
        again.set_epoch(epoch)
        a, b = first[0], again[0]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
        draws.append((float(a["meta"].scale[0]), a["meta"].rotation_deg, a["meta"].flipped))
    assert len(set(draws)) == 4  # a new epoch draws anew


def test_body_halves_come_from_joint_names():
    upper, lower = body_halves(COCO17.keypoints)
    assert upper.tolist() == list(range(11)) and lower.tolist() == list(range(11, 17))
    upper, lower = body_halves(CROWDPOSE.keypoints)
    assert upper.tolist() == [0, 1, 2, 3, 4, 5, 12, 13] and lower.tolist() == [6, 7, 8, 9, 10, 11]
    upper, lower = body_halves(["HeadTop", "leftKnee", "tail", "forearm_marker"])
    assert upper.tolist() == [0] and lower.tolist() == [1]  # "forearm" is not an ear


@pytest.mark.parametrize("pose_config", [COCO17, CROWDPOSE], ids=["coco17", "crowdpose14"])
def test_half_body_crop_centres_on_one_labelled_half(tmp_path, pose_config):
    upper, lower = body_halves(pose_config.keypoints)
    rng = np.random.default_rng(0)
    keypoints = np.zeros((pose_config.num_joints, 3), dtype=np.float32)
    keypoints[upper] = np.c_[rng.uniform(140, 180, len(upper)), rng.uniform(60, 100, len(upper)),
                             np.full(len(upper), 2)]
    keypoints[lower] = np.c_[rng.uniform(140, 180, len(lower)), rng.uniform(150, 190, len(lower)),
                             np.full(len(lower), 2)]
    path = blob_image(tmp_path / "a.png", [])
    aug = TopDownAugmentation(scale_factor=0.0, rotation_prob=0.0, flip=False, half_body_prob=1.0,
                              half_body_min_joints=8)
    ds = TopDownDataset([person(path, keypoints, bbox=(130, 50, 60, 150))], pose_config, input_size=INPUT, aug=aug)
    centres = set()
    for epoch in range(10):
        ds.set_epoch(epoch)
        meta = ds[0]["meta"]
        upper_centre, lower_centre = keypoints[upper, :2].mean(0), keypoints[lower, :2].mean(0)
        near_upper = np.allclose(meta.center, upper_centre, atol=1e-3)
        near_lower = np.allclose(meta.center, lower_centre, atol=1e-3)
        assert near_upper or near_lower
        centres.add("upper" if near_upper else "lower")
        assert meta.scale[1] < 150  # a half, not the whole 150 px person
    assert centres == {"upper", "lower"}


def test_unreadable_image_is_skipped_counted_and_another_sample_drawn(tmp_path):
    good = blob_image(tmp_path / "good.png", [(160, 120)])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    people = [person(bad, one_joint(0, 160, 120), ann_id=1), person(good, one_joint(0, 160, 120), ann_id=2)]
    ds = TopDownDataset(people, COCO17, input_size=INPUT, train=False)
    sample = ds[0]
    assert sample["meta"].ann_id == 2
    assert sum(ds.skipped.values()) >= 1


def test_dataloader_batches_samples_and_metas_concatenate(tmp_path):
    path = blob_image(tmp_path / "a.png", [(160, 120)])
    people = [person(path, one_joint(0, 160, 120), image_id=i, ann_id=10 + i) for i in range(5)]
    ds = TopDownDataset(people, COCO17, input_size=INPUT, train=True)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0))
    assert batches[0]["image"].shape == (2, 3, 64, 48)
    assert batches[0]["meta"].center.shape == (2, 2)
    metas = concat_metas([b["meta"] for b in batches])
    assert metas.image_id.tolist() == [0, 1, 2, 3, 4] and metas.ann_id.tolist() == [10, 11, 12, 13, 14]
    assert metas.scale.shape == (5, 2)


def test_people_from_detections_keeps_confident_person_boxes_on_known_images(coco_mini, tmp_path):
    coco = load_coco(coco_mini.images, coco_mini.keypoints)
    detections_path = coco_mini.detections
    entries = json.loads(detections_path.read_text())
    found = people_from_detections(detections_path, coco.images, 17, score_threshold=0.5)
    assert len(found.people) == sum(e["score"] >= 0.5 for e in entries)
    assert (found.scores >= 0.5).all() and len(found.scores) == len(found.people)
    assert all(p.ann_id == -1 and p.keypoints.shape == (17, 3) and not p.keypoints.any() for p in found.people)
    assert {p.image_path for p in found.people} <= {r.image_path for r in coco.images}

    odd = [
        {"image_id": 785, "category_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9},
        {"image_id": 785, "category_id": 2, "bbox": [10, 10, 50, 80], "score": 0.9},  # not a person
        {"image_id": 123456, "category_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9},  # unknown image
        {"image_id": 785, "category_id": 1, "bbox": [700, 10, 50, 80], "score": 0.9},  # off the image
    ]
    odd_path = tmp_path / "dets.json"
    odd_path.write_text(json.dumps(odd))
    found = people_from_detections(odd_path, coco.images, 17)
    assert len(found.people) == 1
    assert sum(found.skipped.values()) == 2

    # One policy for every detections file (detections.py): an entry a detector never writes is
    # a mistake to fix, named by its index, not a box to skip.
    odd_path.write_text(json.dumps([*odd, {"image_id": 785, "category_id": 1, "score": 0.9}]))  # no box
    with pytest.raises(BadInput, match=r"dets\.json: \[4\]: needs file_name or image_id, and bbox"):
        people_from_detections(odd_path, coco.images, 17)


def test_detections_file_that_is_not_a_list_is_bad_input_naming_the_file(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(BadInput, match=r"dets\.json.*list"):
        people_from_detections(path, [ImageRecord(1, "x.jpg", 10, 10, (), ())], 17)
