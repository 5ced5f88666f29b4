"""Grouping on real annotations: coco-mini's ground truth drawn as training labels at stride 8,
grouped as inference does (upsampled x8 as TAO, or at the network's resolution, the default), and
scored with COCO's own OKS AP. Real people overlap, are small, and miss joints; a grouping that
joins limbs of different people loses AP here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pose_workloads.data.bottomup import joint_sources, to_model_joints
from pose_workloads.data.bpnet_labels import bpnet_labels
from pose_workloads.data.coco import load_coco
from pose_workloads.evaluate import coco_keypoint_metrics
from pose_workloads.grouping import find_people, group_people
from pose_workloads.peaks import find_peaks
from pose_workloads.specs import COCO17, load_pose_config

ROOT = Path(__file__).resolve().parents[2]
STRIDE = 8
POSE_CONFIGS = pytest.mark.parametrize("pose_config_file", ["specs/bpnet/bpnet_18joints.json", None],
                                       ids=["18_joints_with_neck", "coco17_limbs"])


def ground_truth_maps(people_kpts: np.ndarray, limbs, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Training labels (TAO's sigma 7 px, band 1 target px) at stride 8, upsampled x8 bicubic and
    cropped to the image: (K, H, W) heatmaps without background and (2L, H, W) PAFs, image px."""
    height, width = image_hw
    target = (-(-height // STRIDE), -(-width // STRIDE))
    labels = bpnet_labels(people_kpts, limbs, target, STRIDE, heatmap_sigma_px=7.0, paf_ortho_dist_thresh=1.0)
    size = (target[1] * STRIDE, target[0] * STRIDE)
    heatmaps = cv2.resize(labels.heatmaps[:-1].transpose(1, 2, 0), size, interpolation=cv2.INTER_CUBIC)
    pafs = cv2.resize(labels.pafs.transpose(1, 2, 0), size, interpolation=cv2.INTER_CUBIC)
    return heatmaps.transpose(2, 0, 1)[:, :height, :width], pafs.transpose(2, 0, 1)[:, :height, :width]


def coco_mini_ap(coco_mini, pose_config_file, network_resolution: bool) -> tuple[dict, int, int]:
    """COCO AP of grouping coco-mini's ground truth drawn as maps: x8-upsampled maps (TAO's
    decode) or the maps at stride 8 (`find_people`). Returns the metrics, the people reported and
    the people labelled."""
    pose_config = load_pose_config(ROOT / pose_config_file if pose_config_file else None)
    limbs = pose_config.paf_limbs
    sources = joint_sources(COCO17.keypoints, pose_config.keypoints)
    to_coco = [pose_config.keypoints.index(name) for name in COCO17.keypoints]  # drops the neck
    dataset = load_coco(coco_mini.images, coco_mini.keypoints)

    results = []
    for image in dataset.images:
        people = to_model_joints(np.stack([dataset.people[i].keypoints for i in image.people]), sources)
        if network_resolution:
            target = (-(-image.height // STRIDE), -(-image.width // STRIDE))
            labels = bpnet_labels(people, limbs, target, STRIDE, heatmap_sigma_px=7.0, paf_ortho_dist_thresh=1.0)
            keypoints, scores = find_people(labels.heatmaps[:-1], labels.pafs, limbs, 0.1, 0.05, 3.0 / STRIDE)
            found = keypoints[:, :, 2] > 0
            keypoints[:, :, :2] = keypoints[:, :, :2] * STRIDE + (STRIDE - 1) / 2  # map px -> image px
            keypoints[~found] = 0.0
        else:
            heatmaps, pafs = ground_truth_maps(people, limbs, (image.height, image.width))
            peaks = find_peaks(heatmaps, threshold=0.1, sigma_smooth=3.0)
            keypoints, scores = group_people(peaks, pafs, limbs, paf_threshold=0.05)
        for person, score in zip(keypoints[:, to_coco], scores):
            results.append({"image_id": image.image_id, "category_id": 1,
                            "keypoints": person.reshape(-1).tolist(), "score": float(score)})
    labelled = sum(1 for p in dataset.people if p.num_keypoints > 0)
    metrics = coco_keypoint_metrics(coco_mini.keypoints, results, COCO17.oks_sigmas, backend="faster")
    return metrics, len(results), labelled


@POSE_CONFIGS
def test_ground_truth_maps_group_back_to_coco_ap_above_0_95(coco_mini, pose_config_file):
    metrics, reported, labelled = coco_mini_ap(coco_mini, pose_config_file, network_resolution=False)
    assert reported == labelled  # every labelled person found once, no fragments
    assert metrics["AP"] >= 0.95, metrics


@POSE_CONFIGS
def test_network_resolution_grouping_scores_the_same_ap_as_the_upsampled_decode(coco_mini, pose_config_file):
    # The default inference path (no upsampling) against TAO's exact decode on the same people.
    upsampled, _, labelled = coco_mini_ap(coco_mini, pose_config_file, network_resolution=False)
    fast, reported, _ = coco_mini_ap(coco_mini, pose_config_file, network_resolution=True)
    assert reported == labelled
    assert fast["AP"] >= upsampled["AP"] - 1e-9, (fast, upsampled)
