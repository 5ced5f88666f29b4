"""Heatmap decoding (decode.py): argmax + quarter offset, DARK, flip test, back to image px."""

from __future__ import annotations

import numpy as np
import pytest

from pose_workloads.data.crops import affine_transform_matrix, transform_points
from pose_workloads.data.targets import gaussian_heatmaps
from pose_workloads.decode import (
    dark_blur_kernel_size,
    decode_heatmaps,
    flip_back,
    heatmap_to_image_coords,
    reference_decode_argmax,
    reference_decode_dark,
)

SIZE = (64, 48)
COCO_FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


def maps_of(joints_hm: np.ndarray, sigma: float = 2.0, size=SIZE) -> np.ndarray:
    """(N, K, 2) joints -> (N, K, H, W) target heatmaps."""
    return np.stack([gaussian_heatmaps(j, np.ones(len(j)), size, sigma)[0] for j in joints_hm])


def random_heatmaps(rng: np.random.Generator, n: int, k: int, size=SIZE) -> np.ndarray:
    """Model-like maps: a Gaussian, a weaker second one, noise; some all zero, some peaked at an edge."""
    h, w = size
    first = rng.uniform([-2, -2], [w + 1, h + 1], (n, k, 2))
    second = rng.uniform([0, 0], [w, h], (n, k, 2))
    maps = maps_of(first) + 0.5 * maps_of(second) + rng.uniform(0, 0.05, (n, k, h, w)).astype(np.float32)
    maps[0, 0] = 0.0
    maps[0, 1] = -rng.random((h, w))
    return maps.astype(np.float32)


def test_argmax_moves_a_quarter_pixel_toward_the_higher_neighbour():
    maps = np.zeros((1, 1, 8, 8), dtype=np.float32)
    maps[0, 0, 4, 3] = 1.0
    maps[0, 0, 4, 4] = 0.5  # right neighbour higher than left
    maps[0, 0, 3, 3] = 0.2  # upper neighbour higher than lower
    coords, maxvals = decode_heatmaps(maps, "argmax")
    np.testing.assert_allclose(coords[0, 0], [3.25, 3.75])
    assert maxvals[0, 0] == 1.0


@pytest.mark.parametrize("x,y,expected", [(0, 4, [0.0, 4.25]), (7, 4, [7.0, 4.25]), (3, 0, [3.25, 0.0])])
def test_peak_on_the_border_is_only_moved_along_the_other_axis(x, y, expected):
    maps = np.zeros((1, 1, 8, 8), dtype=np.float32)
    maps[0, 0, y, x] = 1.0
    if 0 < x < 7:
        maps[0, 0, y, x + 1] = 0.5
    if 0 < y < 7:
        maps[0, 0, y + 1, x] = 0.5
    coords, _ = decode_heatmaps(maps, "argmax")
    np.testing.assert_allclose(coords[0, 0], expected)


@pytest.mark.parametrize("method", ["argmax", "dark"])
def test_heatmap_without_positive_value_decodes_to_origin_with_its_peak_as_confidence(method):
    maps = np.zeros((1, 2, *SIZE), dtype=np.float32)
    maps[0, 1] = -0.5
    coords, maxvals = decode_heatmaps(maps, method)
    assert np.isfinite(coords).all()
    np.testing.assert_array_equal(coords, 0.0)
    np.testing.assert_array_equal(maxvals[0], [0.0, -0.5])


def test_dark_recovers_subpixel_centres_and_beats_argmax():
    rng = np.random.default_rng(0)
    joints = rng.uniform([3, 3], [SIZE[1] - 4, SIZE[0] - 4], (4, 17, 2))
    maps = maps_of(joints)
    dark, _ = decode_heatmaps(maps, "dark")
    argmax, _ = decode_heatmaps(maps, "argmax")
    dark_error = np.linalg.norm(dark - joints, axis=-1)
    argmax_error = np.linalg.norm(argmax - joints, axis=-1)
    interior = ((joints >= 7) & (joints <= np.array([SIZE[1], SIZE[0]]) - 8)).all(axis=-1)
    assert dark_error[interior].max() < 0.01  # the whole 3-sigma window on the map
    assert dark_error.max() < 0.1  # the map edge cuts the Gaussian and skews the blur
    assert argmax_error.max() <= np.hypot(0.25, 0.25) + 1e-6  # a quarter pixel per axis at worst
    assert dark_error.mean() < argmax_error.mean() / 10


@pytest.mark.parametrize("sigma,kernel", [(2.0, 11), (3.0, 17), (1.5, 7)])
def test_dark_blur_kernel_follows_the_training_sigma(sigma, kernel):
    assert dark_blur_kernel_size(sigma) == kernel


def test_vectorised_argmax_matches_the_per_joint_loop():
    maps = random_heatmaps(np.random.default_rng(1), 5, 17)
    fast = decode_heatmaps(maps, "argmax")
    slow = reference_decode_argmax(maps)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


def test_vectorised_dark_matches_darkposes_per_joint_loop():
    maps = random_heatmaps(np.random.default_rng(2), 5, 17)
    fast = decode_heatmaps(maps, "dark")
    slow = reference_decode_dark(maps)
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-4)
    np.testing.assert_array_equal(fast[1], slow[1])


def test_unknown_decoder_lists_the_valid_ones():
    with pytest.raises(ValueError, match="argmax, dark"):
        decode_heatmaps(np.zeros((1, 1, 8, 8), dtype=np.float32), "soft-argmax")


def test_flip_back_mirrors_swaps_pairs_and_shifts_one_pixel():
    maps = np.zeros((1, 17, *SIZE), dtype=np.float32)
    maps[0, 1, 10, 5] = 1.0  # left eye channel
    maps[0, 0, 20, 30] = 1.0  # nose: no pair
    back = flip_back(maps, COCO_FLIP_PAIRS)
    w = SIZE[1]
    assert back[0, 2, 10, (w - 1 - 5) + 1] == 1.0  # became the right eye, mirrored, one px right
    assert back[0, 0, 20, (w - 1 - 30) + 1] == 1.0
    assert not back[0, 1].any()
    no_shift = flip_back(maps, COCO_FLIP_PAIRS, shift=False)
    assert no_shift[0, 2, 10, w - 1 - 5] == 1.0


def test_flip_test_prediction_lands_within_a_quarter_pixel_of_the_straight_one():
    # A joint at input px x lies at x / 4 on the straight map and, in the mirrored crop (width
    # 192), at (191 - x) / 4: mirrored back that is 3/4 px left; the one-pixel shift leaves 1/4.
    rng = np.random.default_rng(3)
    joints_input = rng.uniform([32, 32], [160, 224], (1, 17, 2))  # whole windows on the map
    straight = joints_input / 4
    mirrored = joints_input.copy()
    mirrored[..., 0] = 191 - mirrored[..., 0]
    order = np.arange(17)
    for a, b in COCO_FLIP_PAIRS:
        order[a], order[b] = b, a
    flipped_maps = maps_of(mirrored[:, order] / 4)
    coords, _ = decode_heatmaps(flip_back(flipped_maps, COCO_FLIP_PAIRS), "dark")
    np.testing.assert_allclose(coords[..., 0] - straight[..., 0], 0.25, atol=0.02)
    np.testing.assert_allclose(coords[..., 1], straight[..., 1], atol=0.02)


@pytest.mark.parametrize("rotation", [0.0, 25.0, -60.0])
def test_heatmap_to_image_coords_inverts_the_crop_affine(rotation):
    rng = np.random.default_rng(4)
    center = np.array([[320.0, 210.5], [40.2, 300.0]])
    scale = np.array([[180.0, 240.0], [60.0, 80.0]])
    points_hm = rng.uniform(0, 48, (2, 17, 2))
    back = heatmap_to_image_coords(points_hm, center, scale, SIZE, rotation)
    for i in range(2):
        forward = affine_transform_matrix(center[i], scale[i], rotation, SIZE)
        np.testing.assert_allclose(transform_points(back[i], forward), points_hm[i], atol=1e-3)
