"""BodyPoseNet grouping: `group_people` against the per-pair, per-sample reference loops.

    python bench/bench_grouping.py [--people 30] [--scenes 3] [--repeat 5] [--min-speedup 20]

Each scene is what inference sees on a crowded picture: `--people` synthetic people (18 joints,
19 limbs, TAO's bpnet_18joints.json) of 60-250 px in a 368x656 input, drawn by the training label
function at stride 8 (`bpnet_labels`), upsampled x8 (bicubic), peaks found by `find_peaks`. Both
groupers run on the same peaks and maps; the script asserts identical skeletons and a speedup of
at least `--min-speedup`, then prints the times. The field's complaint this answers: Python
grouping at 2.4 s vs 0.06 s for the network (lightweight-human-pose-estimation.pytorch #3).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from timing import best_time

from pose_workloads.data.bottomup import bpnet_labels, joint_sources, to_model_joints
from pose_workloads.grouping import find_peaks, group_people, reference_group_people
from pose_workloads.specs import COCO17, load_pose_config

POSE_CONFIG = Path(__file__).resolve().parents[1] / "specs/bpnet/bpnet_18joints.json"
STRIDE = 8
INPUT_HW = (368, 656)

# A standing person in a unit box (x across the width, y down the height), COCO-17 order.
TEMPLATE = np.array([
    (0.50, 0.08), (0.56, 0.05), (0.44, 0.05), (0.62, 0.08), (0.38, 0.08),
    (0.72, 0.24), (0.28, 0.24), (0.82, 0.42), (0.18, 0.42), (0.84, 0.58), (0.16, 0.58),
    (0.64, 0.58), (0.36, 0.58), (0.65, 0.78), (0.35, 0.78), (0.66, 0.97), (0.34, 0.97),
])


def crowd(rng: np.random.Generator, num_people: int) -> np.ndarray:
    """(N, 17, 3) COCO joints (x, y, v=2) in input px: templates scaled to 60-250 px, jittered by
    5 % of the height, anywhere in the input (they overlap, as in a crowd)."""
    height, width = INPUT_HW
    sizes = rng.uniform(60, 250, (num_people, 1, 1))
    box = np.concatenate([0.5 * sizes, sizes], axis=2)  # (N, 1, 2) width, height
    corners = rng.uniform(0, 1, (num_people, 1, 2)) * (np.array([width, height]) - box)
    xy = TEMPLATE[None] * box + corners
    xy += rng.uniform(-0.05, 0.05, xy.shape) * sizes
    return np.concatenate([xy, np.full(xy.shape[:2] + (1,), 2.0)], axis=2)


def upsampled_maps(people: np.ndarray, limbs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels at stride 8, upsampled to input px as inference does: (K, H, W) and (2L, H, W), as
    views of the channels-last arrays cv2.resize returns."""
    target = (INPUT_HW[0] // STRIDE, INPUT_HW[1] // STRIDE)
    labels = bpnet_labels(people, limbs, target, STRIDE, heatmap_sigma_px=7.0, paf_ortho_dist_thresh=1.0)
    size = (INPUT_HW[1], INPUT_HW[0])
    heatmaps = cv2.resize(labels.heatmaps[:-1].transpose(1, 2, 0), size, interpolation=cv2.INTER_CUBIC)
    pafs = cv2.resize(labels.pafs.transpose(1, 2, 0), size, interpolation=cv2.INTER_CUBIC)
    return heatmaps.transpose(2, 0, 1), pafs.transpose(2, 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="runs of the fast path per scene (best is kept)")
    parser.add_argument("--min-speedup", type=float, default=20.0, help="fail below this speedup")
    args = parser.parse_args()

    pose_config = load_pose_config(POSE_CONFIG)
    limbs = pose_config.paf_limbs
    sources = joint_sources(COCO17.keypoints, pose_config.keypoints)
    rng = np.random.default_rng(0)
    print(f"grouping {args.people}-person scenes, {INPUT_HW[0]}x{INPUT_HW[1]} maps, "
          f"{pose_config.num_joints} joints, {len(limbs)} limbs")
    print(f"  {'scene':>5} {'found':>5} {'peaks ms':>9} {'group ms':>9} {'reference ms':>13} {'speedup':>8}")
    fast_total = slow_total = 0.0
    for scene in range(args.scenes):
        people = to_model_joints(crowd(rng, args.people), sources)
        heatmaps, pafs = upsampled_maps(people, limbs)
        peaks_s = best_time(lambda heatmaps=heatmaps: find_peaks(heatmaps, 0.1, 3.0), args.repeat)
        peaks = find_peaks(heatmaps, 0.1, 3.0)
        call = (peaks, pafs, limbs, 0.05)
        fast = group_people(*call)
        slow = reference_group_people(*call)
        assert np.array_equal(fast.keypoints, slow.keypoints), f"scene {scene}: skeletons differ from the reference"
        assert np.array_equal(fast.scores, slow.scores), f"scene {scene}: scores differ from the reference"
        fast_s = best_time(lambda call=call: group_people(*call), args.repeat)
        slow_s = best_time(lambda call=call: reference_group_people(*call), 1)
        fast_total += fast_s
        slow_total += slow_s
        print(f"  {scene:>5} {len(fast.keypoints):>5} {peaks_s * 1e3:>9.2f} {fast_s * 1e3:>9.2f} "
              f"{slow_s * 1e3:>13.1f} {slow_s / fast_s:>7.0f}x")
    speedup = slow_total / fast_total
    print(f"  identical skeletons in every scene; group_people is {speedup:.0f}x faster than the reference loops")
    assert speedup >= args.min_speedup, f"speedup {speedup:.1f}x is below {args.min_speedup}x"


if __name__ == "__main__":
    main()
