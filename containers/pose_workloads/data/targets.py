"""Top-down training targets: one Gaussian heatmap per joint (Simple Baselines, Xiao et al. 2018).

Pure NumPy, no I/O, no global state. The hot path builds every joint's window in one go; the
per-joint loop `reference_gaussian_heatmaps` is the straightforward version kept for the tests and
`bench/bench_topdown.py`, which assert that both give bit-identical targets.

Coordinate space: heatmap pixels, x right and y down, pixel (i, j) centred at integer (x=j, y=i),
the same convention as `cv2.warpAffine` (so input px / stride = heatmap px).
"""

from __future__ import annotations

import numpy as np


def gaussian_window_radius(sigma: float) -> int:
    """Half side of the square window a Gaussian is drawn in: 3 sigma, as Simple Baselines."""
    return int(3 * sigma)


def gaussian_heatmaps(
    joints_hm: np.ndarray,
    visible: np.ndarray,
    heatmap_size: tuple[int, int],
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised Gaussian heatmaps, one per joint, and the per-joint loss weights.

    Args:
        joints_hm: (K, 2) float, joint (x, y) in heatmap px (sub-pixel).
        visible: (K,) any number type, the COCO flag v; joints with v <= 0 get no Gaussian.
        heatmap_size: (height, width) of the heatmaps.
        sigma: Gaussian standard deviation in heatmap px (2 for a 64x48 map).

    Returns:
        heatmaps: (K, H, W) float32. exp(-d^2 / 2 sigma^2) around the sub-pixel joint (value 1
            exactly on it), drawn in the (2r+1)^2 window of radius r = int(3 sigma) around the
            nearest pixel and 0 elsewhere. Sub-pixel, not rounded as in Simple Baselines: the
            rounded centre biases the decoded joint by up to half a heatmap pixel (DARK, Zhang
            et al. 2020), which is 2 input px at stride 4.
        weights: (K,) float32, 1 for a joint that is visible and whose window has a pixel on the
            map, else 0 (as Simple Baselines: no target, no loss).
    """
    height, width = heatmap_size
    joints_hm = np.asarray(joints_hm, dtype=np.float64).reshape(-1, 2)
    num_joints = joints_hm.shape[0]
    radius = gaussian_window_radius(sigma)
    side = 2 * radius + 1

    # Nearest pixel to each joint; floor(x + 0.5) rounds halves up like Simple Baselines' int(x + 0.5)
    # (for x >= 0) and stays correct for joints left of / above the map.
    centre = np.floor(joints_hm + 0.5).astype(np.int64)  # (K, 2)
    offsets = np.arange(-radius, radius + 1)
    # Same expression, same order, same float64 as the reference loop: identical bits.
    dx = centre[:, 0:1] + offsets - joints_hm[:, 0:1]  # (K, side)
    dy = centre[:, 1:2] + offsets - joints_hm[:, 1:2]
    d2 = dx[:, None, :] ** 2 + dy[:, :, None] ** 2  # (K, side rows, side cols)
    windows = np.exp(-d2 / (2 * sigma**2))

    # Each window is pasted with one slice assignment: 17 slices cost less than gathering the
    # in-map part of all windows with index arrays.
    heatmaps = np.zeros((num_joints, height, width), dtype=np.float32)
    weights = np.zeros(num_joints, dtype=np.float32)
    lefts, tops = (centre - radius).T.tolist()
    for k in np.flatnonzero(np.asarray(visible).reshape(-1) > 0).tolist():
        left, top = lefts[k], tops[k]
        x0, x1 = max(left, 0), min(left + side, width)
        y0, y1 = max(top, 0), min(top + side, height)
        if x0 < x1 and y0 < y1:  # the window has a pixel on the map
            weights[k] = 1.0
            heatmaps[k, y0:y1, x0:x1] = windows[k, y0 - top : y1 - top, x0 - left : x1 - left]
    return heatmaps, weights


def reference_gaussian_heatmaps(
    joints_hm: np.ndarray,
    visible: np.ndarray,
    heatmap_size: tuple[int, int],
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """`gaussian_heatmaps` written as Simple Baselines' `generate_target`: one joint per loop turn.

    Kept only as the baseline for tests and benchmarks; same arguments and results.
    """
    height, width = heatmap_size
    joints_hm = np.asarray(joints_hm, dtype=np.float64).reshape(-1, 2)
    visible = np.asarray(visible).reshape(-1)
    num_joints = joints_hm.shape[0]
    radius = gaussian_window_radius(sigma)
    heatmaps = np.zeros((num_joints, height, width), dtype=np.float32)
    weights = np.zeros(num_joints, dtype=np.float32)
    for k in range(num_joints):
        x, y = joints_hm[k]
        mu_x = int(np.floor(x + 0.5))
        mu_y = int(np.floor(y + 0.5))
        left, top = mu_x - radius, mu_y - radius
        right, bottom = mu_x + radius + 1, mu_y + radius + 1
        if visible[k] <= 0 or left >= width or top >= height or right <= 0 or bottom <= 0:
            continue
        weights[k] = 1.0
        window_xs = np.arange(left, right)
        window_ys = np.arange(top, bottom)
        d2 = (window_xs - x)[None, :] ** 2 + (window_ys - y)[:, None] ** 2
        window = np.exp(-d2 / (2 * sigma**2))
        x0, x1 = max(0, left), min(width, right)
        y0, y1 = max(0, top), min(height, bottom)
        heatmaps[k, y0:y1, x0:x1] = window[y0 - top : y1 - top, x0 - left : x1 - left]
    return heatmaps, weights
