"""BodyPoseNet label generation: `bpnet_labels` against the windowed per-person labels the peers ship.

    python bench/bench_labels.py [--people 1 5 20] [--size 368] [--repeat 20]

TAO's training setup: 368x368 input, 46x46 targets, 18 joints, 19 limbs, sigma 7 px, band 1 px.
The baseline, `windowed_labels` below, is how lightweight-human-pose-estimation.pytorch and
OpenPose's label makers work, written here with NumPy inside each window (faster than their
per-pixel Python loops): per person, each joint's Gaussian only inside its window and each
limb's band only inside its box, maxed (heatmaps) and summed then averaged (PAFs) into the maps.
`bpnet_labels` draws the same windows and boxes for all people and joints at once and scatters
them in a few NumPy calls.

The script asserts that `bpnet_labels` gives exactly the per-pixel reference loops' labels (the
tests' oracle) and the baseline the same within float rounding, that `bpnet_labels` is at least
MIN_SPEEDUP times faster than the baseline at GATE_PEOPLE people (issue 11's gate), and prints the times.
One thread (per-core figures).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from timing import best_time  # noqa: E402

from pose_workloads.data.bpnet_labels import (  # noqa: E402
    HEATMAP_FLOOR,
    BpnetLabels,
    bpnet_labels,
    downsample_mask,
    reference_bpnet_labels,
    target_grid,
)
from pose_workloads.specs import load_pose_config  # noqa: E402

POSE_CONFIG = Path(__file__).resolve().parents[1] / "specs/bpnet/bpnet_18joints.json"
STRIDE = 8
GATE_PEOPLE, MIN_SPEEDUP = 5, 3.0
SIGMA_PX, BAND = 7.0, 1.0


def windowed_labels(people, limbs, target_shape, stride, sigma_px, band, mask=None) -> BpnetLabels:
    """The peers' labels: one person, one joint window and one limb box at a time."""
    height, width = target_shape
    xs, ys = target_grid(target_shape, stride)
    num_joints = people.shape[1]
    heatmaps = np.zeros((num_joints + 1, height, width), np.float64)
    reach = sigma_px * np.sqrt(-2 * np.log(HEATMAP_FLOOR))  # input px where the Gaussian ends
    sums = np.zeros((2 * len(limbs), height, width))
    counts = np.zeros((len(limbs), height, width))
    thresh = band * stride
    for person in people:
        for k, (x, y, v) in enumerate(person):
            if v <= 0:
                continue
            c0, c1 = np.searchsorted(xs, [x - reach, x + reach + 1e-9])
            r0, r1 = np.searchsorted(ys, [y - reach, y + reach + 1e-9])
            if c0 >= c1 or r0 >= r1:
                continue
            dx, dy = xs[c0:c1] - x, ys[r0:r1] - y
            window = heatmaps[k, r0:r1, c0:c1]
            np.maximum(window, np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * sigma_px**2)), out=window)
        for limb, (a, b) in enumerate(limbs):
            (ax, ay, av), (bx, by, bv) = person[a], person[b]
            length = np.hypot(bx - ax, by - ay)
            if av <= 0 or bv <= 0 or length == 0:
                continue
            ux, uy = (bx - ax) / length, (by - ay) / length
            c0, c1 = np.searchsorted(xs, [min(ax, bx) - 2 * thresh, max(ax, bx) + 2 * thresh])
            r0, r1 = np.searchsorted(ys, [min(ay, by) - 2 * thresh, max(ay, by) + 2 * thresh])
            if c0 >= c1 or r0 >= r1:
                continue
            rx, ry = xs[None, c0:c1] - ax, ys[r0:r1, None] - ay
            along = rx * ux + ry * uy
            on_band = (np.abs(rx * uy - ry * ux) <= thresh) & (along >= -thresh) & (along <= length + thresh)
            sums[2 * limb, r0:r1, c0:c1] += on_band * ux
            sums[2 * limb + 1, r0:r1, c0:c1] += on_band * uy
            counts[limb, r0:r1, c0:c1] += on_band
    heatmaps[heatmaps < HEATMAP_FLOOR] = 0
    heatmaps[num_joints] = np.clip(1 - heatmaps[:num_joints].max(axis=0), 0, 1)
    pafs = sums / np.maximum(np.repeat(counts, 2, axis=0), 1)
    return BpnetLabels(heatmaps.astype(np.float32), pafs.astype(np.float32),
                       downsample_mask(mask, target_shape, stride))


def crowd(rng: np.random.Generator, num_people: int, num_joints: int, size_px: int) -> np.ndarray:
    """People of 40-120 px spread over the image, 80 % of joints labelled."""
    centres = rng.uniform(0.1 * size_px, 0.9 * size_px, (num_people, 1, 2))
    spread = rng.uniform(20, 60, (num_people, 1, 1))
    people = np.zeros((num_people, num_joints, 3))
    people[:, :, :2] = centres + rng.normal(0, 1, (num_people, num_joints, 2)) * spread
    people[:, :, 2] = np.where(rng.random((num_people, num_joints)) < 0.8, 2, 0)
    return people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--size", type=int, default=368, help="input side in px (targets are size / 8)")
    parser.add_argument("--repeat", type=int, default=20, help="runs of each (best is kept)")
    args = parser.parse_args()

    pose_config = load_pose_config(POSE_CONFIG)
    limbs = pose_config.paf_limbs
    target = (args.size // STRIDE, args.size // STRIDE)
    print(f"labels, {args.size}x{args.size} input, {target[0]}x{target[1]} targets, {pose_config.num_joints} joints, "
          f"{len(limbs)} limbs, one thread; baseline: per-person windows and limb boxes (NumPy per window)")
    print(f"  {'people':>6} {'baseline ms':>11} {'bpnet_labels ms':>15} {'speedup':>8}")
    rng = np.random.default_rng(0)
    gate = None
    for num_people in args.people:
        people = crowd(rng, num_people, pose_config.num_joints, args.size)
        mask = np.where(rng.random((args.size, args.size)) < 0.95, 255, 0).astype(np.uint8)
        call = (people, limbs, target, STRIDE, SIGMA_PX, BAND, mask)
        fast, peer, oracle = bpnet_labels(*call), windowed_labels(*call), reference_bpnet_labels(*call)
        for name, a, b, c in zip(fast._fields, fast, oracle, peer):
            assert np.array_equal(a, b), f"{num_people} people: {name} differs from the reference loops"
            np.testing.assert_allclose(c, b, atol=1e-6, err_msg=f"{num_people} people: the baseline's {name} differs")
        fast_s = best_time(lambda call=call: bpnet_labels(*call), args.repeat)
        slow_s = best_time(lambda call=call: windowed_labels(*call), args.repeat)
        print(f"  {num_people:>6} {slow_s * 1e3:>11.2f} {fast_s * 1e3:>15.2f} {slow_s / fast_s:>7.1f}x")
        if num_people == GATE_PEOPLE:
            gate = slow_s / fast_s
    print("  bpnet_labels equals the per-pixel reference loops bit for bit at every size")
    if gate is not None:
        assert gate >= MIN_SPEEDUP, f"speedup {gate:.1f}x at {GATE_PEOPLE} people is below {MIN_SPEEDUP}x"


if __name__ == "__main__":
    main()
