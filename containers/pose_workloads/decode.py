"""From top-down heatmaps to joint coordinates: argmax + quarter offset, DARK, flip test, back to image.

Pure NumPy (and one OpenCV blur), no torch, no I/O: the model output is `.numpy()`-ed by the caller.
Every function is vectorised over people N and joints K; the loop versions `reference_decode_*`
at the end are what Simple Baselines / DARK wrote, kept for the tests and `bench/bench_topdown.py`.

Coordinate spaces: heatmap px (x right, y down, pixel (i, j) centred at x=j, y=i, as
`cv2.warpAffine`); image px of the original image. `data/topdown.py` makes the crops with
`affine_transform_matrix(center, scale, rotation_deg, size)`; `heatmap_to_image_coords` inverts it.
"""

from __future__ import annotations

import cv2
import numpy as np

DECODERS = ("argmax", "dark")


def decode_heatmaps(
    heatmaps: np.ndarray, method: str = "argmax", sigma: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Joint locations and confidences from heatmaps.

    Args:
        heatmaps: (N, K, H, W) float32 model output for N crops and K joints.
        method: "argmax" (Simple Baselines: the peak, moved 0.25 px toward the higher neighbour)
            or "dark" (Zhang et al. 2020: peak refined by a second-order Taylor expansion of the
            log of the blurred heatmap; +0.7 AP on COCO at 64x48 in mmpose).
        sigma: the training Gaussian's sigma in heatmap px; sets DARK's blur kernel.

    Returns:
        coords: (N, K, 2) float32 (x, y) in heatmap px. (0, 0) where the heatmap has no positive value.
        maxvals: (N, K) float32 heatmap peak value, the joint confidence.
    """
    if method not in DECODERS:
        raise ValueError(f"unknown decoder {method!r}; valid: {', '.join(DECODERS)}")
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    coords, maxvals = argmax_coords(heatmaps)
    if method == "argmax":
        return quarter_offset(heatmaps, coords), maxvals
    return dark_refine(heatmaps, coords, sigma), maxvals


def argmax_coords(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) float32 -> integer peak (x, y) (N, K, 2) float32 heatmap px, peak value (N, K).

    Peaks that are not positive give (0, 0), as Simple Baselines' `get_max_preds`.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    index = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    coords *= (maxvals > 0)[..., None]
    return coords, maxvals.astype(np.float32)


def quarter_offset(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Move each integer peak 0.25 px toward its higher neighbour, per axis (Simple Baselines).

    Halves the expected quantisation error of the argmax. An axis is moved only when the peak has
    both neighbours on it; Simple Baselines asks `1 < px` on both axes together, which needlessly
    skips the second column and row (mmpose tests each axis alone, as here).

    Args:
        heatmaps: (N, K, H, W) float32. coords: (N, K, 2) float32 integer peaks in heatmap px.
    Returns:
        (N, K, 2) float32 heatmap px.
    """
    n, k, h, w = heatmaps.shape
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    n_idx, k_idx = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    # Clipped indices only make the gather legal; the masks throw edge values away.
    right = heatmaps[n_idx, k_idx, py, np.minimum(px + 1, w - 1)]
    left = heatmaps[n_idx, k_idx, py, np.maximum(px - 1, 0)]
    below = heatmaps[n_idx, k_idx, np.minimum(py + 1, h - 1), px]
    above = heatmaps[n_idx, k_idx, np.maximum(py - 1, 0), px]
    shift_x = np.sign(right - left) * ((px > 0) & (px < w - 1))
    shift_y = np.sign(below - above) * ((py > 0) & (py < h - 1))
    return coords + 0.25 * np.stack([shift_x, shift_y], axis=-1).astype(np.float32)


def dark_blur_kernel_size(sigma: float) -> int:
    """Odd Gaussian kernel whose OpenCV default sigma, 0.3((k-1)/2 - 1) + 0.8, is about `sigma`.

    DARK blurs with the training sigma so that the modulated heatmap stays Gaussian: 11 for 2, 17 for 3.
    """
    half = max(1, int(round((sigma - 0.8) / 0.3 + 1)))
    return 2 * half + 1


def blur_keep_max(heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    """DARK's modulation: Gaussian blur with a zero border, rescaled so each map keeps its maximum.

    (N, K, H, W) float32 -> same. The maps are stacked into one tall image, each padded by the
    kernel radius with zeros, so one OpenCV call blurs them all without one map leaking into the next.
    """
    n, k, h, w = heatmaps.shape
    border = (kernel_size - 1) // 2
    padded = np.zeros((n * k, h + 2 * border, w + 2 * border), dtype=np.float32)
    padded[:, border : border + h, border : border + w] = heatmaps.reshape(n * k, h, w)
    tall = padded.reshape(n * k * (h + 2 * border), w + 2 * border)
    blurred = cv2.GaussianBlur(tall, (kernel_size, kernel_size), 0, borderType=cv2.BORDER_CONSTANT)
    blurred = blurred.reshape(n, k, h + 2 * border, w + 2 * border)[:, :, border : border + h, border : border + w]
    old_max = heatmaps.max(axis=(2, 3), keepdims=True)
    new_max = blurred.max(axis=(2, 3), keepdims=True)
    # An all-zero map would give 0/0 here (NaN coordinates in DARK's own code): leave it at zero.
    ratio = np.divide(old_max, new_max, out=np.zeros_like(old_max), where=new_max > 0)
    return blurred * ratio


def dark_refine(heatmaps: np.ndarray, coords: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """DARK (Zhang et al., CVPR 2020): one Newton step on the log of the modulated heatmap.

    A Gaussian's log is a quadratic, so x* = x - H^-1 g from the peak pixel's finite-difference
    gradient g and Hessian H recovers the sub-pixel maximum. Stencils and the `1 < px < W - 2`
    window are DARK's `taylor()`; peaks nearer the edge or with a singular Hessian are kept as is.

    Args:
        heatmaps: (N, K, H, W) float32. coords: (N, K, 2) float32 integer peaks in heatmap px.
        sigma: training Gaussian sigma in heatmap px (sets the blur kernel).
    Returns:
        (N, K, 2) float32 heatmap px.
    """
    n, k, h, w = heatmaps.shape
    log_maps = np.log(np.maximum(blur_keep_max(heatmaps, dark_blur_kernel_size(sigma)), 1e-10))
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    px = np.clip(px, 2, w - 3)
    py = np.clip(py, 2, h - 3)
    n_idx, k_idx = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(dy: int, dx: int) -> np.ndarray:
        return log_maps[n_idx, k_idx, py + dy, px + dx].astype(np.float64)

    centre = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    det = dxx * dyy - dxy**2
    usable = inside & (det != 0)
    safe_det = np.where(usable, det, 1.0)
    # -H^-1 g with the 2x2 inverse written out.
    offset_x = -(dyy * dx - dxy * dy) / safe_det
    offset_y = -(dxx * dy - dxy * dx) / safe_det
    offset = np.stack([offset_x, offset_y], axis=-1) * usable[..., None]
    return (coords + offset).astype(np.float32)


def flip_back(heatmaps_flipped: np.ndarray, flip_pairs: list[tuple[int, int]], shift: bool = True) -> np.ndarray:
    """Heatmaps predicted on a mirrored crop, turned back into the unmirrored crop's heatmaps.

    Mirrors W, swaps left/right channels, and (Simple Baselines' SHIFT_HEATMAP) moves the result
    one pixel right: mirroring the input crop about its pixel grid lands the mirrored prediction
    3/4 heatmap px to the left of the straight one at stride 4; one pixel is the nearest whole step.

    Args:
        heatmaps_flipped: (N, K, H, W) float32, model output on `crop[..., ::-1]`.
        flip_pairs: 0-based (left, right) joint index pairs (PoseConfig.flip_pairs).
    Returns:
        (N, K, H, W) float32, ready to average with the straight prediction.
    """
    heatmaps_flipped = np.asarray(heatmaps_flipped)
    order = np.arange(heatmaps_flipped.shape[1])
    for left, right in flip_pairs:
        order[left], order[right] = right, left
    back = heatmaps_flipped[:, order, :, ::-1]
    if shift:
        shifted = np.empty_like(back)
        shifted[..., 1:] = back[..., :-1]
        shifted[..., 0] = back[..., 0]
        return shifted
    return np.ascontiguousarray(back)


def heatmap_to_image_coords(
    coords: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    heatmap_size: tuple[int, int],
    rotation_deg: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Heatmap px -> original image px: the inverse of each crop's affine, for N crops at once.

    The crop affine (`data.topdown.affine_transform_matrix`) is a similarity: it rotates by
    `rotation_deg` about `center` and scales `scale[0]` image px onto the map width, sending
    `center` to (W/2, H/2). So p_image = center + (scale_w / W) R(rotation) (p_map - (W/2, H/2)).

    Args:
        coords: (N, K, 2) float heatmap px.
        center: (N, 2) image px. scale: (N, 2) crop (w, h) in image px (only w is used: the crop
            already has the heatmap's aspect ratio).
        heatmap_size: (H, W).
        rotation_deg: scalar or (N,), the rotation the crop was made with (0 at test time).
    Returns:
        (N, K, 2) float32 image px.
    """
    h, w = heatmap_size
    coords = np.asarray(coords, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64).reshape(-1, 1, 2)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1, 2)
    theta = np.deg2rad(np.broadcast_to(np.asarray(rotation_deg, dtype=np.float64), scale.shape[:1]))
    px_per_cell = (scale[:, 0] / w)[:, None]
    cos, sin = (np.cos(theta)[:, None], np.sin(theta)[:, None])
    u = coords[..., 0] - w / 2
    v = coords[..., 1] - h / 2
    x = center[..., 0] + px_per_cell * (cos * u - sin * v)
    y = center[..., 1] + px_per_cell * (sin * u + cos * v)
    return np.stack([x, y], axis=-1).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Reference loops: the published code paths, one joint at a time. Tests and bench/ only.
# ------------------------------------------------------------------------------------------------

def reference_decode_argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Simple Baselines `get_final_preds` post-processing, per joint (with the per-axis edge rule)."""
    n, k, h, w = heatmaps.shape
    coords = np.zeros((n, k, 2), dtype=np.float32)
    maxvals = np.zeros((n, k), dtype=np.float32)
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j]
            index = int(np.argmax(hm))
            y, x = divmod(index, w)
            maxvals[i, j] = hm[y, x]
            if hm[y, x] <= 0:
                continue
            coords[i, j] = x, y
            if 0 < x < w - 1:
                coords[i, j, 0] += 0.25 * np.sign(hm[y, x + 1] - hm[y, x - 1])
            if 0 < y < h - 1:
                coords[i, j, 1] += 0.25 * np.sign(hm[y + 1, x] - hm[y - 1, x])
    return coords, maxvals


def reference_decode_dark(heatmaps: np.ndarray, sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """DARK's `gaussian_blur` + `taylor`, per joint, as in github.com/ilovepose/DarkPose."""
    n, k, h, w = heatmaps.shape
    kernel = dark_blur_kernel_size(sigma)
    border = (kernel - 1) // 2
    coords = np.zeros((n, k, 2), dtype=np.float32)
    maxvals = np.zeros((n, k), dtype=np.float32)
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j].astype(np.float32)
            y, x = divmod(int(np.argmax(hm)), w)
            maxvals[i, j] = hm[y, x]
            if hm[y, x] <= 0:
                continue
            padded = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
            padded[border:-border, border:-border] = hm
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
            blurred *= hm.max() / blurred.max()
            log_hm = np.log(np.maximum(blurred, 1e-10)).astype(np.float64)
            coords[i, j] = x, y
            if 1 < x < w - 2 and 1 < y < h - 2:
                dx = 0.5 * (log_hm[y, x + 1] - log_hm[y, x - 1])
                dy = 0.5 * (log_hm[y + 1, x] - log_hm[y - 1, x])
                dxx = 0.25 * (log_hm[y, x + 2] - 2 * log_hm[y, x] + log_hm[y, x - 2])
                dxy = 0.25 * (log_hm[y + 1, x + 1] - log_hm[y - 1, x + 1] - log_hm[y + 1, x - 1] + log_hm[y - 1, x - 1])
                dyy = 0.25 * (log_hm[y + 2, x] - 2 * log_hm[y, x] + log_hm[y - 2, x])
                hessian = np.array([[dxx, dxy], [dxy, dyy]])
                if np.linalg.det(hessian) != 0:
                    coords[i, j] -= np.linalg.solve(hessian, [dx, dy]).astype(np.float32)
    return coords, maxvals
