"""Top-down Gaussian targets (data/targets.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pose_workloads.data.targets import gaussian_heatmaps, reference_gaussian_heatmaps

SIZE = (64, 48)  # (H, W) heatmap of a 256x192 model


def one_joint(x: float, y: float, v: int = 2, sigma: float = 2.0, size=SIZE):
    heatmaps, weights = gaussian_heatmaps(np.array([[x, y]]), np.array([v]), size, sigma)
    return heatmaps[0], weights[0]


def test_peak_is_one_on_an_integer_joint_with_gaussian_falloff():
    heatmap, weight = one_joint(20, 30)
    assert weight == 1.0
    assert heatmap[30, 20] == 1.0
    assert np.unravel_index(heatmap.argmax(), heatmap.shape) == (30, 20)
    assert heatmap[30, 21] == pytest.approx(np.exp(-1 / 8), rel=1e-6)
    assert heatmap[32, 22] == pytest.approx(np.exp(-8 / 8), rel=1e-6)


def test_subpixel_joint_is_centred_between_pixels():
    heatmap, _ = one_joint(20.5, 30.25)
    # Equal values on both sides of x = 20.5; row 30 (0.25 away) above row 31 (0.75 away).
    assert heatmap[30, 20] == pytest.approx(heatmap[30, 21], rel=1e-6)
    assert heatmap[30, 20] > heatmap[31, 20]
    assert heatmap[30, 20] == pytest.approx(np.exp(-(0.25 + 0.0625) / 8), rel=1e-6)


def test_window_is_cut_at_three_sigma():
    heatmap, _ = one_joint(20, 30, sigma=2.0)
    assert heatmap[30, 26] > 0 and heatmap[30, 27] == 0
    assert heatmap[24, 20] > 0 and heatmap[23, 20] == 0
    assert np.count_nonzero(heatmap) == 13 * 13


@pytest.mark.parametrize("v", [0, -1])
def test_invisible_joint_gets_zero_weight(v):
    heatmap, weight = one_joint(20, 30, v=v)
    assert weight == 0.0
    assert not heatmap.any()


@pytest.mark.parametrize("v", [1, 2])
def test_occluded_and_visible_joints_both_get_a_target(v):
    heatmap, weight = one_joint(20, 30, v=v)
    assert weight == 1.0 and heatmap.max() == 1.0


@pytest.mark.parametrize(
    "x,y,expected_weight",
    [
        (-7, 30, 0.0),  # window [-13, -1]: nothing on the map
        (-6, 30, 1.0),  # window reaches column 0
        (47 + 6, 30, 1.0),  # window reaches the last column (47)
        (47 + 7, 30, 0.0),
        (20, 63 + 7, 0.0),
        (20, -6.6, 0.0),  # rounds to -7
    ],
)
def test_joint_whose_window_misses_the_map_gets_zero_weight(x, y, expected_weight):
    heatmap, weight = one_joint(x, y)
    assert weight == expected_weight
    assert heatmap.any() == bool(expected_weight)


def test_joint_just_off_the_map_keeps_its_visible_tail():
    heatmap, _ = one_joint(-6, 30)
    assert heatmap[30, 0] == pytest.approx(np.exp(-36 / 8), rel=1e-6)
    assert np.count_nonzero(heatmap) == 13  # one column of the window


def test_shapes_and_dtypes():
    heatmaps, weights = gaussian_heatmaps(np.zeros((17, 2)), np.ones(17), SIZE, 2.0)
    assert heatmaps.shape == (17, 64, 48) and heatmaps.dtype == np.float32
    assert weights.shape == (17,) and weights.dtype == np.float32


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_joints=st.integers(1, 20),
    sigma=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    size=st.sampled_from([(64, 48), (96, 72), (8, 8)]),
)
def test_matches_the_per_joint_reference_bit_for_bit(seed, num_joints, sigma, size):
    rng = np.random.default_rng(seed)
    joints = rng.uniform(-15, max(size) + 15, (num_joints, 2))
    halves = rng.random(num_joints) < 0.2  # exact .5: where rounding to the window centre is decided
    joints[halves] = np.round(joints[halves]) + 0.5
    visible = rng.integers(0, 3, num_joints)
    fast = gaussian_heatmaps(joints, visible, size, sigma)
    slow = reference_gaussian_heatmaps(joints, visible, size, sigma)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
