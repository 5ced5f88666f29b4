"""BodyPoseNet labels (data/bpnet_labels.py): heatmaps, PAFs, loss mask, model joints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose_workloads.data.bottomup import joint_sources, to_model_joints
from pose_workloads.data.bpnet_labels import HEATMAP_FLOOR, bpnet_labels, reference_bpnet_labels, target_grid
from pose_workloads.specs import COCO17, load_pose_config

REPO = Path(__file__).resolve().parents[2]
BPNET_18 = load_pose_config(REPO / "specs/bpnet/bpnet_18joints.json")
STRIDE = 8
SIGMA = 7.0


def random_people(rng: np.random.Generator, num_people: int, num_joints: int, size_px: int) -> np.ndarray:
    people = np.zeros((num_people, num_joints, 3))
    people[:, :, :2] = rng.uniform(-20, size_px + 20, (num_people, num_joints, 2))
    people[:, :, 2] = rng.integers(0, 3, (num_people, num_joints))
    return people


@pytest.mark.parametrize("num_people,seed", [(0, 0), (1, 1), (3, 2), (6, 3)])
def test_labels_match_reference_loops(num_people, seed):
    rng = np.random.default_rng(seed)
    people = random_people(rng, num_people, BPNET_18.num_joints, 96)
    if num_people > 1:  # two people on top of each other: overlapping bands and Gaussians
        people[1, :, :2] = people[0, :, :2] + rng.uniform(-4, 4, (BPNET_18.num_joints, 2))
    mask = np.where(rng.random((96, 96)) > 0.2, 255, 0).astype(np.uint8)
    fast = bpnet_labels(people, BPNET_18.paf_limbs, (12, 12), STRIDE, SIGMA, 1.0, mask)
    slow = reference_bpnet_labels(people, BPNET_18.paf_limbs, (12, 12), STRIDE, SIGMA, 1.0, mask)
    for name, a, b in zip(fast._fields, fast, slow):
        assert a.dtype == np.float32 and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("sigma, band", [(SIGMA, 1.0), (4.0, 1.6)])
def test_windowed_labels_match_reference_loops_on_maps_larger_than_the_windows(sigma, band):
    # 30x40 maps: each joint's window and limb's box covers a small part, some are cut by the
    # border, some people stand off the map; the rectangle test and the floor decide, not the box.
    rng = np.random.default_rng(11)
    people = random_people(rng, 4, BPNET_18.num_joints, 320)[:, :, :] * np.array([1.0, 0.75, 1.0])
    people[3, :, :2] += 500  # entirely off the map
    fast = bpnet_labels(people, BPNET_18.paf_limbs, (30, 40), STRIDE, sigma, band)
    slow = reference_bpnet_labels(people, BPNET_18.paf_limbs, (30, 40), STRIDE, sigma, band)
    assert fast.pafs.any() and (fast.heatmaps[:-1] > 0).mean() < 0.5
    for name, a, b in zip(fast._fields, fast, slow):
        np.testing.assert_array_equal(a, b, err_msg=name)


def one_person(joints: dict[int, tuple[float, float]], num_joints: int = 2) -> np.ndarray:
    people = np.zeros((1, num_joints, 3))
    for k, (x, y) in joints.items():
        people[0, k] = (x, y, 2)
    return people


def test_shapes_and_channel_layout():
    labels = bpnet_labels(np.zeros((0, 18, 3)), BPNET_18.paf_limbs, (32, 32), STRIDE, SIGMA, 1.0)
    assert labels.heatmaps.shape == (19, 32, 32)
    assert labels.pafs.shape == (38, 32, 32)
    assert labels.mask.shape == (32, 32)
    # Nobody: every joint map 0, background 1, no PAF, all valid.
    assert not labels.heatmaps[:18].any() and (labels.heatmaps[18] == 1).all()
    assert not labels.pafs.any() and (labels.mask == 1).all()


def test_heatmap_peaks_at_one_on_the_target_pixel_centre():
    xs, ys = target_grid((16, 16), STRIDE)
    people = one_person({0: (xs[5], ys[9])})
    labels = bpnet_labels(people, [(0, 1)], (16, 16), STRIDE, SIGMA, 1.0)
    assert labels.heatmaps[0, 9, 5] == 1.0
    assert np.unravel_index(labels.heatmaps[0].argmax(), (16, 16)) == (9, 5)
    assert labels.heatmaps[2, 9, 5] == 0.0  # background = 1 - max
    # One target pixel away (8 input px) the Gaussian has its analytic value.
    assert labels.heatmaps[0, 9, 6] == pytest.approx(np.exp(-64 / (2 * SIGMA**2)), rel=1e-6)


def test_heatmap_tails_below_the_floor_are_zero_and_background_one():
    people = one_person({0: (60.0, 60.0)})
    labels = bpnet_labels(people, [(0, 1)], (16, 16), STRIDE, SIGMA, 1.0)
    xs, ys = target_grid((16, 16), STRIDE)
    d2 = (xs[None, :] - 60.0) ** 2 + (ys[:, None] - 60.0) ** 2
    far = np.exp(-d2 / (2 * SIGMA**2)) < HEATMAP_FLOOR
    assert far.any() and (labels.heatmaps[0][far] == 0).all()
    assert (labels.heatmaps[2][far] == 1).all()
    assert (labels.heatmaps[0][~far] >= HEATMAP_FLOOR).all()


def test_overlapping_people_merge_by_max_not_sum():
    people = np.concatenate([one_person({0: (60.0, 60.0)}), one_person({0: (64.0, 60.0)})])
    labels = bpnet_labels(people, [(0, 1)], (16, 16), STRIDE, SIGMA, 1.0)
    alone = [bpnet_labels(p[None], [(0, 1)], (16, 16), STRIDE, SIGMA, 1.0).heatmaps[0] for p in people]
    np.testing.assert_array_equal(labels.heatmaps[0], np.maximum(*alone))
    assert labels.heatmaps[0].max() <= 1.0


def test_unlabelled_joint_draws_nothing_and_its_limbs_no_paf():
    people = one_person({0: (20.0, 20.0), 1: (100.0, 20.0)})
    people[0, 1, 2] = 0  # joint 1 unlabelled
    labels = bpnet_labels(people, [(0, 1)], (16, 16), STRIDE, SIGMA, 1.0)
    assert labels.heatmaps[0].max() > 0.9
    assert not labels.heatmaps[1].any()
    assert not labels.pafs.any()


def test_paf_band_is_the_unit_vector_within_the_orthogonal_threshold():
    xs, ys = target_grid((16, 16), STRIDE)
    # Horizontal limb along row 8, from column 2 to column 12.
    people = one_person({0: (xs[2], ys[8]), 1: (xs[12], ys[8])})
    labels = bpnet_labels(people, [(0, 1)], (16, 16), STRIDE, SIGMA, paf_ortho_dist_thresh=1.0)
    paf_x, paf_y = labels.pafs
    assert not paf_y.any()
    # thresh 1.0 x stride 8 = 8 input px = exactly one row either side; -8..+8 px along it.
    assert (paf_x[7:10, 1:14] == 1.0).all()
    assert not paf_x[:7].any() and not paf_x[10:].any()
    assert not paf_x[:, :1].any() and not paf_x[:, 14:].any()
    wider = bpnet_labels(people, [(0, 1)], (16, 16), STRIDE, SIGMA, paf_ortho_dist_thresh=2.0)
    assert (wider.pafs[0][6:11, 2:13] == 1.0).all()


def test_paf_of_a_reversed_limb_points_the_other_way():
    xs, ys = target_grid((16, 16), STRIDE)
    people = one_person({0: (xs[3], ys[3]), 1: (xs[11], ys[11])})
    forward = bpnet_labels(people, [(0, 1)], (16, 16), STRIDE, SIGMA, 1.0).pafs
    backward = bpnet_labels(people, [(1, 0)], (16, 16), STRIDE, SIGMA, 1.0).pafs
    on_limb = forward[0] != 0
    assert on_limb[7, 7] and on_limb.sum() >= 9
    np.testing.assert_allclose(forward[:, 7, 7], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_array_equal(backward, -forward)


def test_overlapping_limbs_of_two_people_are_averaged():
    xs, ys = target_grid((16, 16), STRIDE)
    right = one_person({0: (xs[2], ys[8]), 1: (xs[12], ys[8])})  # points +x
    down = one_person({0: (xs[7], ys[3]), 1: (xs[7], ys[13])})  # points +y, crosses at (8, 7)
    labels = bpnet_labels(np.concatenate([right, down]), [(0, 1)], (16, 16), STRIDE, SIGMA, 1.0)
    np.testing.assert_allclose(labels.pafs[:, 8, 7], [0.5, 0.5])  # TAO: the last person wins, (0, 1)
    np.testing.assert_array_equal(labels.pafs[:, 8, 3], [1.0, 0.0])  # only the first person here
    np.testing.assert_array_equal(labels.pafs[:, 4, 7], [0.0, 1.0])  # only the second


def test_later_person_does_not_erase_an_earlier_band():
    # TAO assigns a whole window (zeros included) per person: a later person whose window covers an
    # earlier band wipes it. Here person 2's box covers person 1's band but its band does not.
    xs, ys = target_grid((16, 16), STRIDE)
    first = one_person({0: (xs[2], ys[2]), 1: (xs[6], ys[2])})
    second = one_person({0: (xs[1], ys[12]), 1: (xs[12], ys[1])})
    labels = bpnet_labels(np.concatenate([first, second]), [(0, 1)], (16, 16), STRIDE, SIGMA, 1.0)
    np.testing.assert_array_equal(labels.pafs[:, 2, 3], [1.0, 0.0])


def test_mask_is_the_fraction_of_valid_input_pixels():
    mask = np.full((32, 32), 255, dtype=np.uint8)
    mask[:8, :4] = 0  # half of target pixel (0, 0)
    mask[8:16, 8:16] = 0  # all of target pixel (1, 1)
    labels = bpnet_labels(np.zeros((0, 2, 3)), [(0, 1)], (4, 4), STRIDE, SIGMA, 1.0, mask)
    assert labels.mask[0, 0] == 0.5 and labels.mask[1, 1] == 0.0
    assert labels.mask.sum() == 16 - 1.5


def test_mask_of_another_size_is_refused():
    with pytest.raises(ValueError, match="expected the input size 32x32"):
        bpnet_labels(np.zeros((0, 2, 3)), [(0, 1)], (4, 4), STRIDE, SIGMA, 1.0, np.zeros((30, 32), np.uint8))


# --- model joints from annotated joints ---

def test_neck_is_the_midpoint_of_labelled_shoulders():
    sources = joint_sources(COCO17.keypoints, BPNET_18.keypoints)
    coco = np.zeros((1, 17, 3), dtype=np.float32)
    coco[0, 5] = (10, 20, 2)  # left shoulder
    coco[0, 6] = (30, 24, 1)  # right shoulder, occluded
    model = to_model_joints(coco, sources)
    neck = BPNET_18.keypoints.index("neck")
    np.testing.assert_array_equal(model[0, neck], [20, 22, 1])


def test_neck_is_unlabelled_when_a_shoulder_is():
    sources = joint_sources(COCO17.keypoints, BPNET_18.keypoints)
    coco = np.zeros((1, 17, 3), dtype=np.float32)
    coco[0, 5] = (10, 20, 2)
    assert to_model_joints(coco, sources)[0, BPNET_18.keypoints.index("neck"), 2] == 0


def test_model_joints_follow_the_model_order_by_name():
    sources = joint_sources(COCO17.keypoints, BPNET_18.keypoints)
    coco = np.zeros((2, 17, 3), dtype=np.float32)
    coco[:, :, 0] = np.arange(17)  # x = COCO index
    coco[:, :, 2] = 2
    model = to_model_joints(coco, sources)
    for k, name in enumerate(BPNET_18.keypoints):
        if name != "neck":
            assert model[0, k, 0] == COCO17.keypoints.index(name), name
    assert model.shape == (2, 18, 3)


def test_a_model_joint_that_cannot_be_made_is_named():
    with pytest.raises(ValueError, match="'head_top'"):
        joint_sources(COCO17.keypoints, ["nose", "head_top"])
