"""Joint peaks in heatmaps: local maxima, and their sub-pixel refinement.

`find_peaks` is OpenPose's peak finder: smooth each heatmap with a Gaussian, keep local maxima
above a threshold (one per plateau); a peak's score is the unsmoothed value there (what the
network said). `refine_peaks` moves each to the maximum of a Gaussian through it and its
neighbours, for maps at the network's resolution (grouping.find_people).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def find_peaks(heatmaps: np.ndarray, threshold: float, sigma_smooth: float = 3.0,
               cross: bool = False) -> list[np.ndarray]:
    """Local maxima of each joint heatmap.

    Args:
        heatmaps: (K, H, W) float32, joint channels only (no background), map pixels. Work happens
            channels-last, so a `(H, W, K)` array passed as `maps.transpose(2, 0, 1)` (what
            `cv2.resize` gives) is used without a copy.
        threshold: a peak's smoothed value must exceed this.
        sigma_smooth: Gaussian sigma in map pixels applied before the 3x3 max-pool; 0 = none.
        cross: a peak need only beat its 4 neighbours (OpenPose's rule), not all 8.

    Returns:
        K arrays, one per joint, each (N_k, 3) float32 of (x, y, score) in map pixels, in raster
        order (row, then column). `score` is the unsmoothed heatmap value at the peak.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    num_joints, height, width = heatmaps.shape
    if num_joints == 0 or height == 0 or width == 0:
        return [np.zeros((0, 3), np.float32) for _ in range(num_joints)]
    # OpenCV filters all channels of an (H, W, K) image in one call (up to 512 channels).
    channels_last = np.ascontiguousarray(heatmaps.transpose(1, 2, 0))
    smoothed = cv2.GaussianBlur(channels_last, (0, 0), sigma_smooth) if sigma_smooth > 0 else channels_last
    smoothed = smoothed.reshape(height, width, num_joints)  # OpenCV drops a channel axis of 1
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS if cross else cv2.MORPH_RECT, (3, 3))
    pooled = cv2.dilate(smoothed, kernel).reshape(height, width, num_joints)
    is_max = (smoothed >= pooled) & (smoothed > threshold)
    # flatnonzero + divmod: several times faster than a 3-D np.nonzero on big maps.
    pixel, joint = np.divmod(np.flatnonzero(is_max), num_joints)
    y, x = np.divmod(pixel, width)

    # A plateau (equal neighbours, e.g. a joint exactly between two grid points) must give one
    # peak, not two that split a person: a peak must also beat, strictly, the neighbours before it
    # in raster order (the row above and the pixel to the left). Checked on the few maxima only.
    value = smoothed[y, x, joint]
    first = np.ones(len(y), bool)
    for dy, dx in ((-1, 0), (0, -1)) if cross else ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (nx >= 0) & (nx < width)
        first[inside] &= value[inside] > smoothed[ny[inside], nx[inside], joint[inside]]
    y, x, joint = y[first], x[first], joint[first]

    order = np.argsort(joint, kind="stable")  # per joint, keeping raster order
    y, x, joint = y[order], x[order], joint[order]
    found = np.stack([x, y, channels_last[y, x, joint]], axis=1).astype(np.float32)
    return np.split(found, np.searchsorted(joint, np.arange(1, num_joints)))


def refine_peaks(heatmaps: np.ndarray, peaks: Sequence[np.ndarray], threshold: float) -> list[np.ndarray]:
    """Sub-pixel peaks: the maximum of a Gaussian through each peak and its neighbours.

    Along each axis a parabola goes through the log of the peak's value and of its two neighbours
    (a Gaussian through three samples: exact for the Gaussians the network is trained to draw,
    DARK's idea, Zhang et al. 2020), its vertex moves the peak by at most half a pixel and its
    height is the peak's score. Where a value is not positive the parabola fits the values
    themselves. Peaks whose refined score is not above `threshold` are dropped.

    Args:
        heatmaps: (K, H, W) float32, as given to `find_peaks` (unsmoothed).
        peaks: `find_peaks`' output on them, integer x, y.
        threshold: the least refined score kept.

    Returns:
        K arrays (N_k, 3) float32 of (x, y, score), map px, in the order given.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    num_joints, height, width = heatmaps.shape
    counts = [len(p) for p in peaks]
    if sum(counts) == 0:
        return [np.zeros((0, 3), np.float32) for _ in range(num_joints)]
    found = np.concatenate([np.asarray(p, np.float32).reshape(-1, 3) for p in peaks])
    joint = np.repeat(np.arange(num_joints), counts)
    x, y = found[:, 0].astype(np.intp), found[:, 1].astype(np.intp)

    def at(dy: int, dx: int) -> np.ndarray:
        return heatmaps[joint, np.clip(y + dy, 0, height - 1), np.clip(x + dx, 0, width - 1)].astype(np.float64)

    mid, left, right, up, down = at(0, 0), at(0, -1), at(0, 1), at(-1, 0), at(1, 0)
    positive = (mid > 0) & (left > 0) & (right > 0) & (up > 0) & (down > 0)

    def fit(lo: np.ndarray, hi: np.ndarray, inside: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offset of the vertex (within +-0.5) and the height it adds above the centre."""
        g, h = (hi - lo) / 2, hi - 2 * centre + lo
        offset = np.where(inside & (h < 0), np.clip(-g / np.where(h < 0, h, -1.0), -0.5, 0.5), 0.0)
        return offset, g * offset + 0.5 * h * offset * offset

    with np.errstate(divide="ignore"):
        log = [np.log(np.where(positive, v, 1.0)) for v in (mid, left, right, up, down)]
    lin = [mid, left, right, up, down]
    c, lo_x, hi_x, lo_y, hi_y = [np.where(positive, a, b) for a, b in zip(log, lin)]
    off_x, gain_x = fit(lo_x, hi_x, (x > 0) & (x < width - 1), c)
    off_y, gain_y = fit(lo_y, hi_y, (y > 0) & (y < height - 1), c)
    top = c + gain_x + gain_y
    score = np.where(positive, np.exp(top), top)
    refined = np.stack([x + off_x, y + off_y, score], axis=1).astype(np.float32)
    keep = score > threshold
    return [r[k] for r, k in zip(np.split(refined, np.cumsum(counts)[:-1]), np.split(keep, np.cumsum(counts)[:-1]))]
