"""BodyPoseNet training labels: joint heatmaps, part affinity fields (PAFs) and the loss mask.

NumPy (and OpenCV on arrays), no I/O. `bpnet_labels` draws each joint's Gaussian and each limb's band only where
they can be non-zero (a window per joint, a box per limb) and scatters all of them at once;
`reference_bpnet_labels` is the same labelling as per-pixel loops, the tests' oracle: both agree
bit for bit (tests/workloads/test_bottomup_labels.py, bench/bench_labels.py).

Coordinate spaces (see data/bottomup.py): joints are in input px; target pixel (i, j) stands for
the input point x = j*s + (s-1)/2, y = i*s + (s-1)/2 at stride s, for heatmaps and PAFs alike
(TAO uses top-left corners for PAFs, shifting them 3.5 px against the joints).
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
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
    num_joints = people.shape[1]
    xs, ys = target_grid(target_shape, stride)
    heatmaps = np.empty((num_joints + 1, height, width), np.float32)
    heatmaps[:num_joints] = joint_heatmaps(people, xs, ys, heatmap_sigma_px, stride)
    heatmaps[num_joints] = np.clip(np.float32(1.0) - heatmaps[:num_joints].max(axis=0, initial=np.float32(0.0)), 0.0,
                                   1.0)
    pafs = limb_pafs(people, np.asarray(limbs, dtype=np.int64).reshape(-1, 2), xs, ys, paf_ortho_dist_thresh * stride,
                     stride)
    return BpnetLabels(heatmaps, pafs, downsample_mask(mask, target_shape, stride))


def _windows(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every integer in [lo[b], hi[b]] clipped to [0, size), for each box b: (box, index) arrays,
    box-major, ascending within a box."""
    lo, hi = np.maximum(lo, 0), np.minimum(hi, size - 1)
    counts = np.maximum(hi - lo + 1, 0)
    box = np.repeat(np.arange(len(lo)), counts)
    return box, lo[box] + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def _cells(rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray],
           num_boxes: int) -> tuple[np.ndarray, ...]:
    """The cells (row x column) of each box from its rows and columns (`_windows`), box-major,
    raster order within a box: (box, row, col)."""
    row_box, row = rows
    col_box, col = cols
    num_cols = np.bincount(col_box, minlength=num_boxes)
    col_start = np.cumsum(num_cols) - num_cols
    per_row = num_cols[row_box]  # each row of a box repeats its box's columns
    cell_row = np.repeat(np.arange(len(row)), per_row)
    box = row_box[cell_row]
    within = np.arange(int(per_row.sum())) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    return box, row[cell_row], col[col_start[box] + within]


def joint_heatmaps(people: np.ndarray, xs: np.ndarray, ys: np.ndarray, sigma_px: float, stride: int) -> np.ndarray:
    """(K, h, w) float32 joint heatmaps: each labelled joint's Gaussian drawn only in the window
    where it can reach HEATMAP_FLOOR, all windows scattered by max at once."""
    num_joints, height, width = people.shape[1], len(ys), len(xs)
    maps = np.zeros(num_joints * height * width)
    person, joint = np.nonzero(people[:, :, 2] > 0)
    x, y = people[person, joint, 0], people[person, joint, 1]
    # exp(-d^2 / 2 sigma^2) >= floor only within `reach` target px (plus a little for rounding:
    # the floor, not the window, decides which values are kept).
    reach = sigma_px * np.sqrt(-2.0 * np.log(HEATMAP_FLOOR)) / stride + 0.01
    centre_x, centre_y = (x - (stride - 1) / 2) / stride, (y - (stride - 1) / 2) / stride
    with np.errstate(invalid="ignore"):  # far-off joints: empty windows
        cols = _windows(np.ceil(centre_x - reach).astype(np.int64), np.floor(centre_x + reach).astype(np.int64), width)
        rows = _windows(np.ceil(centre_y - reach).astype(np.int64), np.floor(centre_y + reach).astype(np.int64), height)
    box, row, col = _cells(rows, cols, len(x))
    # The reference's arithmetic, term for term, so that both agree bit for bit.
    dx, dy = xs[col] - x[box], ys[row] - y[box]
    value = np.exp(-(dy * dy + dx * dx) / (2.0 * sigma_px * sigma_px))
    np.maximum.at(maps, (joint[box] * height + row) * width + col, value)
    maps[maps < HEATMAP_FLOOR] = 0.0
    return maps.reshape(num_joints, height, width).astype(np.float32)


def limb_pafs(people: np.ndarray, limbs: np.ndarray, xs: np.ndarray, ys: np.ndarray, thresh: float,
              stride: int) -> np.ndarray:
    """(2L, h, w) float32 PAFs: each drawn limb's band tested only in its bounding box, all boxes
    accumulated at once (sums and counts, then the average)."""
    num_limbs, height, width = len(limbs), len(ys), len(xs)
    start, end = people[:, limbs[:, 0]], people[:, limbs[:, 1]]  # (N, L, 3)
    vec_x, vec_y = end[..., 0] - start[..., 0], end[..., 1] - start[..., 1]
    length = np.sqrt(vec_x * vec_x + vec_y * vec_y)
    person, limb = np.nonzero((start[..., 2] > 0) & (end[..., 2] > 0) & (length > 0))  # person-major
    ax, ay, length = start[person, limb, 0], start[person, limb, 1], length[person, limb]
    ux, uy = vec_x[person, limb] / length, vec_y[person, limb] / length
    # The box of the band's axis, grown by the band's half width (and a little for rounding: the
    # band test, not the box, decides which pixels are drawn), in target px.
    xs_band = np.stack([ax - ux * thresh, ax + ux * (length + thresh)])
    ys_band = np.stack([ay - uy * thresh, ay + uy * (length + thresh)])
    margin = thresh + 0.01 * stride
    with np.errstate(invalid="ignore"):
        to_col = lambda v: (v - (stride - 1) / 2) / stride  # noqa: E731
        cols = _windows(np.floor(to_col(xs_band.min(axis=0) - margin)).astype(np.int64),
                        np.ceil(to_col(xs_band.max(axis=0) + margin)).astype(np.int64), width)
        rows = _windows(np.floor(to_col(ys_band.min(axis=0) - margin)).astype(np.int64),
                        np.ceil(to_col(ys_band.max(axis=0) + margin)).astype(np.int64), height)
    box, row, col = _cells(rows, cols, len(ax))
    rx, ry = xs[col] - ax[box], ys[row] - ay[box]
    along = rx * ux[box] + ry * uy[box]
    ortho = np.abs(rx * uy[box] - ry * ux[box])
    inside = np.flatnonzero((ortho <= thresh) & (along >= -thresh) & (along <= length[box] + thresh))
    box = box[inside]
    # bincount adds in array order, here person by person: the reference's summation order.
    cell = (limb[box] * height + row[inside]) * width + col[inside]
    size = num_limbs * height * width
    count = np.bincount(cell, minlength=size)
    divisor = np.maximum(count, 1)
    pafs = np.empty((2 * num_limbs, height, width), np.float32)
    pafs[0::2] = (np.bincount(cell, ux[box], minlength=size) / divisor).reshape(num_limbs, height, width)
    pafs[1::2] = (np.bincount(cell, uy[box], minlength=size) / divisor).reshape(num_limbs, height, width)
    return pafs


def downsample_mask(mask: np.ndarray | None, target_shape: tuple[int, int], stride: int) -> np.ndarray:
    """(h, w) float32: the fraction of valid (> 127) px of an input-px mask under each target px.
    OpenCV's area resize at an integer factor sums each block and scales by 1 / stride^2, exact
    for 0/1 values (multiples of a power of two)."""
    height, width = target_shape
    if mask is None:
        return np.ones((height, width), dtype=np.float32)
    if mask.shape != (height * stride, width * stride):
        raise ValueError(
            f"mask is {mask.shape[0]}x{mask.shape[1]}, expected the input size {height * stride}x{width * stride}")
    valid = (mask > 127).astype(np.float32)
    if stride & (stride - 1) == 0:  # a power of two: 1 / stride^2 is exact
        return cv2.resize(valid, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width)
    return (valid.reshape(height, stride, width, stride).sum(axis=(1, 3)) / (stride * stride)).astype(np.float32)


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
