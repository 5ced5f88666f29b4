"""BodyPoseNet training labels: joint heatmaps, part affinity fields (PAFs) and the loss mask.

Pure NumPy, no I/O. `bpnet_labels` draws each joint's Gaussian and each limb's band only where
they can be non-zero (a window per joint, a box per limb) and scatters all of them at once;
`reference_bpnet_labels` is the same labelling as per-pixel loops, the tests' oracle: both agree
bit for bit (tests/workloads/test_bottomup_labels.py, bench/bench_labels.py).

Coordinate spaces (see data/bottomup.py): joints are in input px; target pixel (i, j) stands for
the input point x = j*s + (s-1)/2, y = i*s + (s-1)/2 at stride s, for heatmaps and PAFs alike
(TAO uses top-left corners for PAFs, shifting them 3.5 px against the joints).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# TAO zeroes Gaussian tails below this (LabelProcessor.HEATMAP_THRESHOLD): the map is exactly 0 away
# from joints, so the background channel is exactly 1 there.
HEATMAP_FLOOR = 0.001


class BpnetLabels(NamedTuple):
    heatmaps: np.ndarray  # (K + 1, h, w) float32, joints then background
    pafs: np.ndarray  # (2L, h, w) float32, limb l is channels (2l: x, 2l+1: y)
    mask: np.ndarray  # (h, w) float32 in [0, 1], the fraction of valid input px under a target px


def target_grid(target_shape: tuple[int, int], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Input-px coordinates of the target pixel centres: xs (w,), ys (h,) float64 (see module doc)."""
    height, width = target_shape
    xs = np.arange(width) * stride + (stride - 1) / 2
    ys = np.arange(height) * stride + (stride - 1) / 2
    return xs, ys


def bpnet_labels(
    people_kpts: np.ndarray,
    limbs: list[tuple[int, int]],
    target_shape: tuple[int, int],
    stride: int,
    heatmap_sigma_px: float,
    paf_ortho_dist_thresh: float,
    mask: np.ndarray | None = None,
) -> BpnetLabels:
    """BodyPoseNet training targets (Cao et al. 2017, OpenPose; TAO's LabelProcessor, fixed).

    Args:
        people_kpts: (N, K, 3) float, (x, y, v) in input px; joints with v > 0 are drawn (TAO draws
            visible, occluded and annotatable alike).
        limbs: L (a, b) 0-based joint pairs; limb l points from a to b.
        target_shape: (h, w) of the maps; the input is (h * stride, w * stride).
        stride: input px per target px (8).
        heatmap_sigma_px: Gaussian sigma in input px (TAO: 7).
        paf_ortho_dist_thresh: half width of a limb's band, in target px (TAO: 1.0, times the stride).
        mask: (h * stride, w * stride) uint8 in input px, > 127 = valid; None = all valid.

    Returns:
        BpnetLabels.
        heatmaps[k] = max over people of exp(-d^2 / 2 sigma^2), d the input-px distance from the
            target pixel's centre to the joint; values < 0.001 set to 0. heatmaps[K] (background)
            = 1 - max over joints, clipped to [0, 1].
        pafs[2l:2l+2] = the limb's unit vector on its band: target pixels whose centre lies within
            thresh * stride input px of the line a->b and, along it, within [-thresh * stride,
            |b - a| + thresh * stride] (a rectangle around the limb, the same for every rotation;
            TAO clips the line to its axis-aligned box instead). Where the bands of several people
            overlap the vectors are averaged (OpenPose eq. 9); TAO lets the last person overwrite
            the others, also outside its band ("TODO: Normalize/Average the PAF"). Limbs with an
            unlabelled end or zero length draw nothing.
        mask = the fraction of valid input px in each target pixel's stride x stride block.
    """
    height, width = target_shape
    people = np.asarray(people_kpts, dtype=np.float64)
    num_people, num_joints = people.shape[0], people.shape[1]
    xs, ys = target_grid(target_shape, stride)
    two_sigma2 = 2.0 * heatmap_sigma_px * heatmap_sigma_px

    # Heatmaps: every person x joint Gaussian at once, (N, K, h, w), then the max over people.
    dx2 = (xs[None, None, :] - people[:, :, 0:1]) ** 2  # (N, K, w)
    dy2 = (ys[None, None, :] - people[:, :, 1:2]) ** 2  # (N, K, h)
    gaussians = np.exp(-(dy2[:, :, :, None] + dx2[:, :, None, :]) / two_sigma2)
    gaussians[people[:, :, 2] <= 0] = 0.0
    joint_maps = gaussians.max(axis=0) if num_people else np.zeros((num_joints, height, width))
    joint_maps[joint_maps < HEATMAP_FLOOR] = 0.0
    joint_maps = joint_maps.astype(np.float32)
    background = np.clip(np.float32(1.0) - joint_maps.max(axis=0, initial=np.float32(0.0)), 0.0, 1.0)
    heatmaps = np.concatenate([joint_maps, background[None]], axis=0)

    # PAFs: every person x limb band at once, (N, L, h, w); sums over people, then averages.
    limb_idx = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
    start = people[:, limb_idx[:, 0]]  # (N, L, 3)
    end = people[:, limb_idx[:, 1]]
    vec = end[:, :, :2] - start[:, :, :2]
    length = np.sqrt(vec[:, :, 0] * vec[:, :, 0] + vec[:, :, 1] * vec[:, :, 1])  # (N, L)
    drawn = (start[:, :, 2] > 0) & (end[:, :, 2] > 0) & (length > 0)
    safe_length = np.where(drawn, length, 1.0)
    unit_x = np.where(drawn, vec[:, :, 0] / safe_length, 0.0)[:, :, None, None]  # (N, L, 1, 1)
    unit_y = np.where(drawn, vec[:, :, 1] / safe_length, 0.0)[:, :, None, None]
    rel_x = xs[None, None, None, :] - start[:, :, 0, None, None]  # (N, L, 1, w)
    rel_y = ys[None, None, :, None] - start[:, :, 1, None, None]  # (N, L, h, 1)
    along = rel_x * unit_x + rel_y * unit_y  # (N, L, h, w)
    ortho = np.abs(rel_x * unit_y - rel_y * unit_x)
    thresh = paf_ortho_dist_thresh * stride
    band = (
        drawn[:, :, None, None]
        & (ortho <= thresh)
        & (along >= -thresh)
        & (along <= length[:, :, None, None] + thresh)
    )
    count = band.sum(axis=0)  # (L, h, w)
    sum_x = np.where(band, unit_x, 0.0).sum(axis=0)
    sum_y = np.where(band, unit_y, 0.0).sum(axis=0)
    divisor = np.maximum(count, 1)
    pafs = np.empty((2 * len(limb_idx), height, width), dtype=np.float32)
    pafs[0::2] = sum_x / divisor
    pafs[1::2] = sum_y / divisor

    return BpnetLabels(heatmaps, pafs, downsample_mask(mask, target_shape, stride))


def downsample_mask(mask: np.ndarray | None, target_shape: tuple[int, int], stride: int) -> np.ndarray:
    """(h, w) float32: the fraction of valid (> 127) px of an input-px mask under each target px."""
    height, width = target_shape
    if mask is None:
        return np.ones((height, width), dtype=np.float32)
    if mask.shape != (height * stride, width * stride):
        raise ValueError(f"mask is {mask.shape[0]}x{mask.shape[1]}, expected the input size {height * stride}x{width * stride}")
    valid = (mask > 127).reshape(height, stride, width, stride).sum(axis=(1, 3))
    return (valid / (stride * stride)).astype(np.float32)


def reference_bpnet_labels(
    people_kpts: np.ndarray,
    limbs: list[tuple[int, int]],
    target_shape: tuple[int, int],
    stride: int,
    heatmap_sigma_px: float,
    paf_ortho_dist_thresh: float,
    mask: np.ndarray | None = None,
) -> BpnetLabels:
    """`bpnet_labels` written as loops over channels, pixels and people, as the paper reads.

    Kept only as the baseline for tests and benchmarks; same arguments and results.
    """
    height, width = target_shape
    people = np.asarray(people_kpts, dtype=np.float64)
    num_people, num_joints = people.shape[0], people.shape[1]
    xs, ys = target_grid(target_shape, stride)
    two_sigma2 = 2.0 * heatmap_sigma_px * heatmap_sigma_px
    thresh = paf_ortho_dist_thresh * stride

    heatmaps = np.zeros((num_joints + 1, height, width), dtype=np.float32)
    for k in range(num_joints):
        for i in range(height):
            for j in range(width):
                best = 0.0
                for p in range(num_people):
                    x, y, v = people[p, k]
                    if v > 0:
                        dx, dy = xs[j] - x, ys[i] - y
                        best = max(best, np.exp(-(dy * dy + dx * dx) / two_sigma2))
                heatmaps[k, i, j] = best if best >= HEATMAP_FLOOR else 0.0
    for i in range(height):
        for j in range(width):
            peak = max((heatmaps[k, i, j] for k in range(num_joints)), default=np.float32(0.0))
            heatmaps[num_joints, i, j] = min(max(np.float32(1.0) - peak, 0.0), 1.0)

    pafs = np.zeros((2 * len(limbs), height, width), dtype=np.float32)
    for limb, (a, b) in enumerate(limbs):
        for i in range(height):
            for j in range(width):
                sum_x = sum_y = 0.0
                count = 0
                for p in range(num_people):
                    ax, ay, av = people[p, a]
                    bx, by, bv = people[p, b]
                    vx, vy = bx - ax, by - ay
                    length = np.sqrt(vx * vx + vy * vy)
                    if av <= 0 or bv <= 0 or length == 0:
                        continue
                    ux, uy = vx / length, vy / length
                    rx, ry = xs[j] - ax, ys[i] - ay
                    along = rx * ux + ry * uy
                    ortho = abs(rx * uy - ry * ux)
                    if ortho <= thresh and -thresh <= along <= length + thresh:
                        sum_x += ux
                        sum_y += uy
                        count += 1
                if count:
                    pafs[2 * limb, i, j] = sum_x / count
                    pafs[2 * limb + 1, i, j] = sum_y / count

    label_mask = np.ones((height, width), dtype=np.float32)
    if mask is not None:
        for i in range(height):
            for j in range(width):
                block = mask[i * stride:(i + 1) * stride, j * stride:(j + 1) * stride]
                label_mask[i, j] = np.count_nonzero(block > 127) / (stride * stride)
    return BpnetLabels(heatmaps, pafs, label_mask)
