"""BodyPoseNet augmentation (data/bottomup.py): one affine for image, mask and joints."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pose_workloads.data.bottomup import (
    NO_AUGMENTATION,
    SpatialParams,
    draw_spatial_params,
    spatial_affine,
    warp_sample,
)
from pose_workloads.specs import BpnetSpatialAug

INPUT_HW = (128, 128)


def apply(affine, xy):
    return affine.matrix @ np.array([xy[0], xy[1], 1.0])


def test_person_centric_centres_the_main_person_at_the_target_scale():
    affine = spatial_affine("person_centric", NO_AUGMENTATION, (480, 640), INPUT_HW,
                            person_centre=(400.0, 200.0), person_size_px=200.0, target_person_scale=0.5)
    np.testing.assert_allclose(apply(affine, (400, 200)), [63.5, 63.5])
    # 200 source px -> 0.5 x 128 = 64 input px.
    top, bottom = apply(affine, (400, 100)), apply(affine, (400, 300))
    assert bottom[1] - top[1] == pytest.approx(64.0)
    assert not affine.mirrored


def test_person_centric_needs_a_person():
    with pytest.raises(ValueError, match="main person"):
        spatial_affine("person_centric", NO_AUGMENTATION, (480, 640), INPUT_HW)


def test_standard_fits_the_image_keeping_its_aspect_ratio():
    affine = spatial_affine("standard", NO_AUGMENTATION, (240, 480), INPUT_HW)
    # Pixel centres at integers: the image's edges (-0.5 and W - 0.5) land on the input's edges.
    np.testing.assert_allclose(apply(affine, (-0.5, -0.5)), [-0.5, 31.5], atol=1e-9)
    np.testing.assert_allclose(apply(affine, (479.5, 239.5)), [127.5, 95.5], atol=1e-9)


def test_standard_with_fixed_aspect_ratio_stretches_to_the_input():
    affine = spatial_affine("standard_with_fixed_aspect_ratio", NO_AUGMENTATION, (240, 480), INPUT_HW)
    a, b = apply(affine, (0, 0)), apply(affine, (480, 240))
    np.testing.assert_allclose(b - a, [128, 128])


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="person_centric, standard or standard_with_fixed_aspect_ratio"):
        spatial_affine("random_crop", NO_AUGMENTATION, (10, 10), INPUT_HW)


def test_rotation_and_zoom_turn_about_the_person():
    params = SpatialParams(False, False, (0.0, 0.0), 2.0, 90.0)
    affine = spatial_affine("person_centric", params, (480, 640), INPUT_HW,
                            person_centre=(300.0, 200.0), person_size_px=128.0, target_person_scale=1.0)
    np.testing.assert_allclose(apply(affine, (300, 200)), [63.5, 63.5], atol=1e-9)
    # 20 px right of the centre, zoom 2 halves it to 10, +90 deg (x right, y down) turns it downwards.
    np.testing.assert_allclose(apply(affine, (320, 200)), [63.5, 73.5], atol=1e-9)


def test_flip_mirrors_the_image_and_swaps_left_and_right_joints():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[40:60, 10:20] = 255  # a bright patch on the left, where joint 0 ("left") is
    people = np.array([[[15.0, 50.0, 2.0], [85.0, 50.0, 2.0], [50.0, 20.0, 2.0]]])
    params = SpatialParams(True, False, (0.0, 0.0), 1.0, 0.0)
    affine = spatial_affine("standard", params, (100, 100), (100, 100))
    assert affine.mirrored
    warped, _, out = warp_sample(image, None, people, affine, [(0, 1)], (100, 100))
    assert warped[50, 85].max() == 255 and warped[50, 15].max() == 0  # patch moved right
    # Joint 0 is the left one again after the swap: it holds the mirrored right joint (now on the left).
    np.testing.assert_allclose(out[0, 0, :2], [14.0, 50.0])
    np.testing.assert_allclose(out[0, 1, :2], [84.0, 50.0])
    np.testing.assert_allclose(out[0, 2, :2], [49.0, 20.0])  # unpaired joint: mirrored only
    assert people[0, 0, 0] == 15.0  # the caller's array is untouched


def test_flipping_both_ways_is_a_rotation_and_keeps_left_and_right():
    params = SpatialParams(True, True, (0.0, 0.0), 1.0, 0.0)
    assert not spatial_affine("standard", params, (100, 100), (100, 100)).mirrored


@pytest.mark.parametrize("seed", range(4))
def test_image_content_moves_with_its_joint(seed):
    rng = np.random.default_rng(seed)
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    joint = rng.uniform(150, 250, 2)
    cv2.circle(image, (int(round(joint[0])), int(round(joint[1]))), 6, (255, 255, 255), -1)
    aug = BpnetSpatialAug(rotate_deg_max=40, translate_max_x=20, translate_max_y=20, flip_lr_prob=0.5,
                          zoom_prob=1.0, zoom_ratio_min=0.8, zoom_ratio_max=1.2)
    params = draw_spatial_params(aug, rng, (300, 400))
    affine = spatial_affine("person_centric", params, (300, 400), INPUT_HW,
                            person_centre=(200.0, 150.0), person_size_px=150.0, target_person_scale=0.6)
    people = np.array([[[joint[0], joint[1], 2.0]]])
    warped, _, out = warp_sample(image, None, people, affine, [], INPUT_HW)
    ys, xs = np.nonzero(warped[:, :, 0] > 128)
    assert len(xs) > 0
    np.testing.assert_allclose([xs.mean(), ys.mean()], out[0, 0, :2], atol=1.0)


def test_mask_stays_binary_and_the_border_counts_as_valid():
    mask = np.full((100, 100), 255, dtype=np.uint8)
    mask[30:70, 30:70] = 0
    params = SpatialParams(False, False, (0.0, 0.0), 2.0, 30.0)  # zoomed out: border shows
    affine = spatial_affine("standard", params, (100, 100), INPUT_HW)
    _, warped_mask, _ = warp_sample(np.zeros((100, 100, 3), np.uint8), mask, np.zeros((0, 1, 3)), affine, [], INPUT_HW)
    assert set(np.unique(warped_mask)) == {0, 255}
    assert warped_mask[0, 0] == 255 and warped_mask[63, 63] == 0


def test_draws_stay_in_the_configured_ranges():
    aug = BpnetSpatialAug(rotate_deg_max=10, translate_max_x=5, translate_min_x=2, translate_max_y=0,
                          flip_lr_prob=0.0, zoom_prob=0.0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = draw_spatial_params(aug, rng, (100, 100))
        assert -10 <= p.rotate_deg <= 10 and 2 <= p.translate_px[0] <= 5 and p.translate_px[1] == 0
        assert not p.flip_lr and p.zoom == 1.0


def test_a_shrinking_warp_is_an_area_resize_as_evaluate_does():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 450, 3), dtype=np.uint8)  # high frequencies alias when sampled
    affine = spatial_affine("standard_with_fixed_aspect_ratio", NO_AUGMENTATION, (300, 450), (96, 128))
    warped, _, _ = warp_sample(image, None, np.zeros((0, 1, 3)), affine, [], (96, 128))
    np.testing.assert_array_equal(warped, cv2.resize(image, (128, 96), interpolation=cv2.INTER_AREA))
    # Rotated and shrunk: still the area average's smoothness, not the 4-pixel samples' noise.
    params = SpatialParams(False, False, (0.0, 0.0), 1.0, 30.0)
    turned, _, _ = warp_sample(image, None, np.zeros((0, 1, 3)),
                               spatial_affine("standard", params, (300, 450), (96, 128)), [], (96, 128))
    inside = turned[40:56, 56:72].astype(float)
    assert inside.std() < 0.5 * image.std()


def test_labels_of_a_flipped_sample_are_the_mirror_with_left_and_right_swapped():
    from pathlib import Path

    from pose_workloads.data.bpnet_labels import bpnet_labels
    from pose_workloads.specs import load_pose_config

    pose = load_pose_config(Path(__file__).resolve().parents[2] / "specs/bpnet/bpnet_18joints.json")
    rng = np.random.default_rng(0)
    people = np.zeros((2, 18, 3))
    people[:, :, :2] = rng.uniform(20, 230, (2, 18, 2))
    people[:, :, 2] = 2
    image = np.zeros((256, 256, 3), np.uint8)
    labels = {}
    for flip in (False, True):
        affine = spatial_affine("standard", SpatialParams(flip, False, (0.0, 0.0), 1.0, 0.0), (256, 256), (128, 128))
        _, mask, warped = warp_sample(image, None, people, affine, pose.flip_pairs, (128, 128))
        labels[flip] = bpnet_labels(warped, pose.paf_limbs, (16, 16), 8, 7.0, 1.0, mask)
    swap = list(range(18))
    for a, b in pose.flip_pairs:
        swap[a], swap[b] = b, a
    plain, flipped = labels[False], labels[True]
    for k in range(18):  # the flipped left wrist map is the mirrored right wrist map
        np.testing.assert_allclose(flipped.heatmaps[k], plain.heatmaps[swap[k]][:, ::-1], atol=1e-6)
    limb_of = {tuple(limb): i for i, limb in enumerate(pose.paf_limbs)}
    for i, (a, b) in enumerate(pose.paf_limbs):
        j = limb_of[(swap[a], swap[b])]
        np.testing.assert_allclose(flipped.pafs[2 * i], -plain.pafs[2 * j][:, ::-1], atol=1e-6)  # x turns round
        np.testing.assert_allclose(flipped.pafs[2 * i + 1], plain.pafs[2 * j + 1][:, ::-1], atol=1e-6)
