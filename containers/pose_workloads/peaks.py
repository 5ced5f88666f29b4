"""Joint peaks in heatmaps: local maxima, and their sub-pixel refinement.

`find_peaks` is OpenPose's peak finder: smooth each heatmap with a Gaussian, keep local maxima
above a threshold (one per plateau); a peak's score is the unsmoothed value there (what the
network said). `refine_peaks` places each at sub-pixel precision, for maps at the network's
resolution (grouping.find_people): on the Gaussian through it and its neighbours where the peak
is one, else at the maxima TAO's decode (maps upsampled x8 and smoothed) finds around it, without
upsampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

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
    return _per_joint(found, np.searchsorted(joint, np.arange(num_joints + 1)))


def _per_joint(rows: np.ndarray, bounds: np.ndarray) -> list[np.ndarray]:
    """Joint k's rows are rows[bounds[k]:bounds[k + 1]] (slices: np.split costs more than the rest)."""
    return [rows[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


# The surface TAO/OpenPose search for peaks: maps upsampled SUBPIXELS x (bicubic) and smoothed by a
# Gaussian. Both steps are linear and separable, so around a peak the surface is P -> A.T @ P @ A
# for the patch P of map samples within REACH; WINDOW is where maxima are looked for.
SUBPIXELS = 8
# A window covers the upsampled px of its map px and of the 8 around it (the same joint of two
# people 1-2 map px apart can be one maximum at map resolution and two on the surface), and one
# more on each side to compare and fit the parabola; where it holds no maximum it moves one map px
# towards more (CLIMBS), so the search reaches 2.5 map px. REACH covers the window, the Gaussian's
# 1.5 px (OpenCV's kernel radius, 4 sigma) and bicubic's 2 px.
REACH = 5
WINDOW = np.arange(-SUBPIXELS - 1, 2 * SUBPIXELS + 1)  # upsampled px around SUBPIXELS * x
CLIMBS = 1


@cache
def _surface_operators(sigma_upsampled: float) -> tuple[np.ndarray, np.ndarray]:
    """(B, A), each (2 * REACH + 1, len(WINDOW)): patch samples -> the window's upsampled values,
    bicubic (B, for scores) and bicubic then Gaussian-smoothed (A, for positions). Built by
    passing each impulse through the same cv2.resize and kernel TAO's decode uses."""
    size = 2 * REACH + 1
    upsampled = cv2.resize(np.eye(size, dtype=np.float32), (size * SUBPIXELS, size), interpolation=cv2.INTER_CUBIC)
    smoothed = cv2.GaussianBlur(upsampled, (0, 0), sigmaX=sigma_upsampled, sigmaY=1e-6) if sigma_upsampled > 0 \
        else upsampled
    columns = SUBPIXELS * REACH + WINDOW
    return np.ascontiguousarray(upsampled[:, columns]), np.ascontiguousarray(smoothed[:, columns])


def _rows_and_columns(heatmaps: np.ndarray, joint: np.ndarray, x: np.ndarray, y: np.ndarray, reach: int) \
        -> tuple[np.ndarray, np.ndarray]:
    """(2 * reach + 1, n) flat offsets of the rows and the columns around each (joint, x, y) in
    `heatmaps.reshape(-1)`; rows and columns beyond the map's edge repeat it (as cv2.resize and the
    fit assume)."""
    _, height, width = heatmaps.shape
    offsets = np.arange(-reach, reach + 1)[:, None]
    rows = (joint * height + np.minimum(np.maximum(y + offsets, 0), height - 1)) * width
    return rows, np.minimum(np.maximum(x + offsets, 0), width - 1)


def _patches(heatmaps: np.ndarray, joint: np.ndarray, x: np.ndarray, y: np.ndarray, reach: int) -> np.ndarray:
    """(2 * reach + 1, 2 * reach + 1, n) map samples [dy, dx, peak] around each (joint, x, y), peaks
    last: each sample's row across the peaks is one contiguous array. One flat gather: fastest."""
    rows, cols = _rows_and_columns(heatmaps, joint, x, y, reach)
    return np.take(heatmaps.reshape(-1), rows[:, None, :] + cols[None, :, :])


def _patches_by_peak(heatmaps: np.ndarray, joint: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, 2 * REACH + 1, 2 * REACH + 1): the patch of each peak, one contiguous matrix each."""
    rows, cols = _rows_and_columns(heatmaps, joint, x, y, REACH)
    return np.take(heatmaps.reshape(-1), rows.T[:, :, None] + cols.T[:, None, :])


def _windows(heatmaps: np.ndarray, operator: np.ndarray, joint: np.ndarray, x: np.ndarray, y: np.ndarray) \
        -> np.ndarray:
    """operator.T @ P @ operator for the patch P around every (joint, x, y), all at once: [peak, v, u]
    window values. Window px beyond the map's edge are -inf: they are not in the upsampled image."""
    size, side, n = 2 * REACH + 1, len(WINDOW), len(x)
    patches = _patches_by_peak(heatmaps, joint, x, y)
    rows = (patches.reshape(n * size, size) @ operator).reshape(n, size, side).transpose(0, 2, 1)
    values = (rows.reshape(n * side, size) @ operator).reshape(n, side, side).transpose(0, 2, 1)
    height, width = heatmaps.shape[1:]
    edge = np.flatnonzero((x <= 1) | (y <= 1) | (x >= width - 2) | (y >= height - 2))
    if len(edge):
        u, v = SUBPIXELS * x[edge, None] + WINDOW, SUBPIXELS * y[edge, None] + WINDOW
        outside_v, outside_u = (v < 0) | (v >= SUBPIXELS * height), (u < 0) | (u >= SUBPIXELS * width)
        values[edge] = np.where(outside_v[:, :, None] | outside_u[:, None, :], -np.inf, values[edge])
    return values


def _window_maxima(values: np.ndarray) -> np.ndarray:
    """(n, side - 2, side - 2): the window px (less its outer ring) above or equal to their 8
    neighbours, TAO's peak test as `find_peaks` runs it. (OpenPose's 4-neighbour test also takes
    the px along a diagonal ridge of a trained network's maps, each a peak that splits people: on
    600 demo val images AP 0.155 with all of them in the 3x3 map px, 0.170 without.)"""
    n, side = len(values), values.shape[1]
    # One dilation of the windows stacked as an image: an inner px's neighbours are in its own
    # window (only the rings mix with the next window's, and they are not tested).
    pooled = cv2.dilate(values.reshape(n * side, side), _SQUARE).reshape(values.shape)
    inner = values[:, 1:-1, 1:-1]
    return (inner >= pooled[:, 1:-1, 1:-1]) & (inner > -np.inf)


_SQUARE = np.ones((3, 3), np.uint8)


def _climb_steps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For windows that hold no maximum: the map px step (-1, 0, 1 in x and y) towards the highest
    neighbour of their largest value, which lies beyond them."""
    n, side = len(values), values.shape[1] - 2
    iy, ix = np.divmod(values[:, 1:-1, 1:-1].reshape(n, -1).argmax(axis=1), side)
    around = values[np.arange(n)[:, None], iy[:, None] + 1 + NEIGHBOURS[:, 0], ix[:, None] + 1 + NEIGHBOURS[:, 1]]
    dy, dx = NEIGHBOURS[around.argmax(axis=1)].T
    return np.where((ix + dx < 0) | (ix + dx >= side), dx, 0), np.where((iy + dy < 0) | (iy + dy >= side), dy, 0)


# The 8 neighbours of a px, (dy, dx).
NEIGHBOURS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


def _surface_maxima(heatmaps: np.ndarray, joint: np.ndarray, x: np.ndarray, y: np.ndarray,
                    sigma_smooth: float) -> tuple[np.ndarray, ...]:
    """The maxima of TAO's surface (maps upsampled x8, bicubic, smoothed by `sigma_smooth` map px)
    near each (joint, x, y) map px: all those (`_window_maxima`) among the upsampled px of its 3x3
    map px, or, where they hold none, of the 3x3 one map px towards more (up to CLIMBS times); each
    placed between the 1/8 px steps at the vertex of a Gaussian through the three values around it.

    Returns (candidate, x, y, score, key) per maximum: the index of the (joint, x, y) it was found
    from, map px, the bicubic map there (the score), and the upsampled px (row * 8W + column;
    candidates near each other find the same maxima, which share it). A candidate with no maximum
    within reach gives none."""
    bicubic, surface = _surface_operators(float(sigma_smooth) * SUBPIXELS)
    x, y = x.copy(), y.copy()
    values = _windows(heatmaps, surface, joint, x, y)
    is_max = _window_maxima(values)
    climbing = np.flatnonzero(~is_max.any(axis=(1, 2)))
    for _ in range(CLIMBS):
        if len(climbing) == 0:
            break
        step_x, step_y = _climb_steps(values[climbing])
        moved = (step_x != 0) | (step_y != 0)
        climbing, step_x, step_y = climbing[moved], step_x[moved], step_y[moved]
        x[climbing] += step_x
        y[climbing] += step_y
        values[climbing] = _windows(heatmaps, surface, joint[climbing], x[climbing], y[climbing])
        is_max[climbing] = _window_maxima(values[climbing])
        climbing = climbing[~is_max[climbing].any(axis=(1, 2))]
    inner = len(WINDOW) - 2
    found, at = np.divmod(np.flatnonzero(is_max), inner * inner)  # flatnonzero: faster than 3-D nonzero
    iy, ix = np.divmod(at, inner)
    iy, ix = iy + 1, ix + 1  # window rows and columns (the ring is row and column 0)

    def offset(lo: np.ndarray, top: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Between the 1/8 px steps: the vertex of a Gaussian through lo, top, hi (-inf beyond the
        edge, and any value not > 0, leave the step as is)."""
        ok = (lo > 0) & (hi > 0)
        logs = [np.log(np.where(ok, v, 1.0).astype(np.float64)) for v in (lo, top, hi)]
        return _vertex(*logs, ok)[0]

    top = values[found, iy, ix]
    off_x = offset(values[found, iy, ix - 1], top, values[found, iy, ix + 1])
    off_y = offset(values[found, iy - 1, ix], top, values[found, iy + 1, ix])
    u, v = SUBPIXELS * x[found] + WINDOW[ix], SUBPIXELS * y[found] + WINDOW[iy]
    score = np.einsum("nl,nlk,nk->n", bicubic[:, iy].T, _patches_by_peak(heatmaps, joint[found], x[found], y[found]),
                      bicubic[:, ix].T)
    return (found, (u + off_x + 0.5) / SUBPIXELS - 0.5, (v + off_y + 0.5) / SUBPIXELS - 0.5, score,
            v * (SUBPIXELS * heatmaps.shape[2]) + u)


def _vertex(lo: np.ndarray, centre: np.ndarray, hi: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertex of the parabola through (-1, lo), (0, centre), (1, hi): its offset, clipped to
    +-0.5 (0 where not `valid` or not a maximum), and the height it adds above the centre."""
    slope, curve = (hi - lo) / 2, hi - 2 * centre + lo
    offset = np.where(valid & (curve < 0), np.clip(-slope / np.where(curve < 0, curve, -1.0), -0.5, 0.5), 0.0)
    return offset, slope * offset + 0.5 * curve * offset * offset


# A peak whose 3x3 samples' logs differ from a separable Gaussian's by less than this everywhere
# (the shape labels are drawn with) keeps its Gaussian fit; a trained network's peaks are not
# that shape (on drawn crowd maps 82-97 % of peaks pass, on the demo models 0-3 %).
GAUSSIAN_RESIDUAL = 0.05


def refine_peaks(heatmaps: np.ndarray, peaks: Sequence[np.ndarray], threshold: float,
                 sigma_smooth: float = 3.0 / SUBPIXELS) -> list[np.ndarray]:
    """Sub-pixel peaks from the integer ones `find_peaks` gives.

    Where a peak's 3x3 samples are a Gaussian (what the network is trained to draw), the maximum
    of the Gaussian through it and its neighbours: along each axis a parabola through the logs of
    the three values (DARK's idea, Zhang et al. 2020), exact for a Gaussian. Elsewhere (a trained
    network's peaks, which are not Gaussians, and the same joint of people so close that their
    peaks merge at map resolution), the maxima TAO's decode finds on the maps upsampled x8 and
    smoothed by `sigma_smooth` (`_surface_maxima`, computed only around the peak): every one
    within its 3x3 map px, or, where there is none, one map px further towards more. As TAO's
    peak test on that surface, candidates that reach the same maximum give one peak and one with
    no maximum near gives none. Peaks whose score is not above `threshold` are dropped.

    On drawn maps this keeps the fit's precision; on the trained models it places joints where
    TAO's decode does or better (coco-mini overfit AP 0.936 vs TAO 0.913 vs the fit alone 0.900;
    bench/bench_grouping.py, tests/workloads/test_bpnet_train_overfit.py).

    Args:
        heatmaps: (K, H, W) float32, as given to `find_peaks` (unsmoothed).
        peaks: `find_peaks`' output on them, integer x, y.
        threshold: the least score kept.
        sigma_smooth: TAO's smoothing, map px (OpenPose's 3 input px / 8).

    Returns:
        K arrays (N_k, 3) float32 of (x, y, score), map px, in the order of the peaks given they
        come from (none, one, or, where maxima are close, several per peak given).
    """
    heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)  # patches are gathered from it flat
    num_joints, height, width = heatmaps.shape
    counts = [len(p) for p in peaks]
    if sum(counts) == 0:
        return [np.zeros((0, 3), np.float32) for _ in range(num_joints)]
    found = np.concatenate([np.asarray(p, np.float32).reshape(-1, 3) for p in peaks])
    joint = np.repeat(np.arange(num_joints), counts)
    x, y = found[:, 0].astype(np.intp), found[:, 1].astype(np.intp)

    block = _patches(heatmaps, joint, x, y, 1).astype(np.float64)  # samples beyond the edge repeat it
    measured = block > 0
    log = np.log(np.where(measured, block, 1.0))
    # A separable Gaussian's log at (dy, dx) is its row's plus its column's minus the centre's (at
    # the map's edge too: samples beyond it repeat the edge's, as the fit assumes).
    gaussian = measured.all(axis=(0, 1)) & (
        np.abs(log[1:2, :] + log[:, 1:2] - log[1:2, 1:2] - log).max(axis=(0, 1)) < GAUSSIAN_RESIDUAL)
    off_x, gain_x = _vertex(log[1, 0], log[1, 1], log[1, 2], (x > 0) & (x < width - 1))
    off_y, gain_y = _vertex(log[0, 1], log[1, 1], log[2, 1], (y > 0) & (y < height - 1))
    refined = np.stack([x + off_x, y + off_y, np.exp(log[1, 1] + gain_x + gain_y)], axis=1).astype(np.float32)

    fitted = np.flatnonzero(gaussian)
    rows, source = refined[fitted], fitted
    other = np.flatnonzero(~gaussian)
    if len(other):
        found, sx, sy, sscore, key = _surface_maxima(heatmaps, joint[other], x[other], y[other], sigma_smooth)
        origin = other[found]  # the candidate each maximum was found from
        # As TAO's peak test on that surface: a maximum found from several candidates is one peak
        # (kept with the first), and one nearest a fitted peak's map px is that peak.
        first = np.unique(joint[origin] * (SUBPIXELS * SUBPIXELS * height * width) + key, return_index=True)[1]
        origin, sx, sy, sscore = origin[first], sx[first], sy[first], sscore[first]
        fitted_at = np.zeros(heatmaps.shape, bool)
        fitted_at[joint[fitted], y[fitted], x[fitted]] = True
        apart = ~fitted_at[joint[origin], np.clip(np.rint(sy).astype(np.intp), 0, height - 1),
                           np.clip(np.rint(sx).astype(np.intp), 0, width - 1)]
        rows = np.concatenate([rows, np.stack([sx, sy, sscore], axis=1)[apart].astype(np.float32)])
        source = np.concatenate([source, origin[apart]])
    # Per joint, in the order of the candidates they came from (a stable sort keeps a candidate's
    # maxima in raster order).
    order = np.argsort(source, kind="stable")
    rows, source = rows[order], source[order]
    keep = rows[:, 2] > threshold
    rows, source = rows[keep], source[keep]
    return _per_joint(rows, np.searchsorted(joint[source], np.arange(num_joints + 1)))
