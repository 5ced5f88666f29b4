"""BodyPoseNet label generation: `bpnet_labels` against the per-pixel reference loops.

    python bench/bench_labels.py [--people 6] [--size 256] [--repeat 20]

Both run in this process on the same inputs (TAO's training setup: 256x256 input, 32x32 targets,
18 joints, 19 limbs); the script asserts they give identical labels, then prints the time per
sample of each and the speedup. The reference is what TAO's per-person loops amount to, written as
the paper reads (one pixel at a time); TAO itself vectorizes per person over a window.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from timing import best_time

from pose_workloads.data.bpnet_labels import bpnet_labels, reference_bpnet_labels
from pose_workloads.specs import load_pose_config

POSE_CONFIG = Path(__file__).resolve().parents[1] / "specs/bpnet/bpnet_18joints.json"
STRIDE = 8


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
    parser.add_argument("--people", type=int, default=6)
    parser.add_argument("--size", type=int, default=256, help="input side in px (targets are size / 8)")
    parser.add_argument("--repeat", type=int, default=20, help="runs of the fast path (best is kept)")
    args = parser.parse_args()

    pose_config = load_pose_config(POSE_CONFIG)
    rng = np.random.default_rng(0)
    people = crowd(rng, args.people, pose_config.num_joints, args.size)
    mask = np.where(rng.random((args.size, args.size)) < 0.95, 255, 0).astype(np.uint8)
    target = (args.size // STRIDE, args.size // STRIDE)
    call = (people, pose_config.paf_limbs, target, STRIDE, 7.0, 1.0, mask)

    fast = bpnet_labels(*call)
    slow = reference_bpnet_labels(*call)
    for name, a, b in zip(fast._fields, fast, slow):
        assert np.array_equal(a, b), f"{name} differs from the reference"

    fast_s = best_time(lambda: bpnet_labels(*call), args.repeat)
    slow_s = best_time(lambda: reference_bpnet_labels(*call), 1)
    print(f"labels for {args.people} people, {args.size}x{args.size} input, {target[0]}x{target[1]} targets: identical")
    print(f"  bpnet_labels            {fast_s * 1e3:9.2f} ms/sample")
    print(f"  reference_bpnet_labels  {slow_s * 1e3:9.2f} ms/sample")
    print(f"  speedup                 {slow_s / fast_s:9.0f}x")


if __name__ == "__main__":
    main()
