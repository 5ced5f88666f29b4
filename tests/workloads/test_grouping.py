"""Peaks and PAF grouping on synthetic maps: people drawn as Gaussians and limb bands at known
places, so the expected skeletons are the ones drawn."""

from __future__ import annotations

import numpy as np
import pytest

from pose_workloads.grouping import People, find_people, group_people
from pose_workloads.grouping_reference import reference_group_people
from pose_workloads.peaks import find_peaks, refine_peaks
from pose_workloads.specs import COCO17

LIMBS = COCO17.paf_limbs
K = COCO17.num_joints

# A standing person in a unit box (x across the width, y down the height), COCO-17 order.
TEMPLATE = np.array([
    (0.50, 0.08), (0.56, 0.05), (0.44, 0.05), (0.62, 0.08), (0.38, 0.08),
    (0.72, 0.24), (0.28, 0.24), (0.82, 0.42), (0.18, 0.42), (0.84, 0.58), (0.16, 0.58),
    (0.64, 0.58), (0.36, 0.58), (0.65, 0.78), (0.35, 0.78), (0.66, 0.97), (0.34, 0.97),
])


def person_at(x0: float, y0: float, height: float, rng: np.random.Generator | None = None,
              jitter_px: float = 0.0) -> np.ndarray:
    """(K, 2) integer joint positions of a person whose box starts at (x0, y0)."""
    xy = TEMPLATE * (height * 0.5, height) + (x0, y0)
    if rng is not None and jitter_px:
        xy = xy + rng.uniform(-jitter_px, jitter_px, xy.shape)
    return np.round(xy)


def render(people: list[np.ndarray], shape: tuple[int, int], sigma_px: float = 1.5, band_px: float = 1.5):
    """Heatmaps (K, H, W) as the max of Gaussians, PAFs (2L, H, W) as unit vectors on a band
    around each limb (later people overwrite earlier ones, as TAO's labels do). Each joint and
    limb is drawn in its own small window, so a crowd renders in milliseconds."""
    h, w = shape
    heatmaps = np.zeros((K, h, w), np.float32)
    pafs = np.zeros((2 * len(LIMBS), h, w), np.float32)
    reach = int(np.ceil(4 * sigma_px))
    for xy in people:
        for k, (x, y) in enumerate(xy):
            x0, x1 = max(int(x) - reach, 0), min(int(x) + reach + 1, w)
            y0, y1 = max(int(y) - reach, 0), min(int(y) + reach + 1, h)
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            window = heatmaps[k, y0:y1, x0:x1]
            np.maximum(window, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma_px**2)), out=window)
        for i, (a, b) in enumerate(LIMBS):
            d = xy[b] - xy[a]
            length = np.hypot(*d)
            if length < 1:
                continue
            u = d / length
            lo = np.maximum(np.floor(np.minimum(xy[a], xy[b]) - band_px), 0).astype(int)
            hi = np.minimum(np.ceil(np.maximum(xy[a], xy[b]) + band_px) + 1, (w, h)).astype(int)
            ys, xs = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float32)
            along = (xs - xy[a][0]) * u[0] + (ys - xy[a][1]) * u[1]
            across = np.abs((xs - xy[a][0]) * u[1] - (ys - xy[a][1]) * u[0])
            band = (along >= 0) & (along <= length) & (across <= band_px)
            pafs[2 * i, lo[1]:hi[1], lo[0]:hi[0]][band] = u[0]
            pafs[2 * i + 1, lo[1]:hi[1], lo[0]:hi[0]][band] = u[1]
    return heatmaps, pafs


def group(heatmaps, pafs, impl=group_people, **kwargs) -> People:
    peaks = find_peaks(heatmaps, threshold=0.1, sigma_smooth=1.0)
    return impl(peaks, pafs, LIMBS, paf_threshold=0.05, **kwargs)


def match_to_truth(found: np.ndarray, truth: list[np.ndarray]) -> list[float]:
    """For each true person, the largest joint error (px) of the found person nearest to it."""
    errors = []
    for xy in truth:
        dist = np.abs(found[:, :, :2] - xy[None]).max(axis=(1, 2))
        errors.append(float(dist.min()) if len(dist) else np.inf)
    return errors


def test_find_peaks_returns_each_local_maximum_above_threshold():
    heatmaps, _ = render([person_at(10, 5, 40), person_at(40, 5, 40)], (50, 70))
    heatmaps[0] *= 0.05  # all noses below the threshold
    peaks = find_peaks(heatmaps, threshold=0.1, sigma_smooth=1.0)
    assert len(peaks) == K
    assert peaks[0].shape == (0, 3)
    for k in range(1, K):
        assert peaks[k].dtype == np.float32
        expected = sorted([tuple(person_at(10, 5, 40)[k]), tuple(person_at(40, 5, 40)[k])], key=lambda p: (p[1], p[0]))
        assert [tuple(p[:2]) for p in peaks[k]] == expected
        assert np.allclose(peaks[k][:, 2], 1.0)  # the unsmoothed value at a drawn centre


def test_a_plateau_gives_one_peak_not_two():
    # A joint exactly between two pixels: two equal maxima side by side, and two equal ones in
    # a 2x2 block. Two peaks would let two people share (and split) one joint.
    heatmaps = np.zeros((2, 9, 9), np.float32)
    heatmaps[0, 4, 3:5] = 1.0
    heatmaps[1, 3:5, 3:5] = 1.0
    peaks = find_peaks(heatmaps, threshold=0.1, sigma_smooth=0.0)
    assert [p[:, :2].tolist() for p in peaks] == [[[3, 4]], [[3, 3]]]
    # One channel (OpenCV returns 2-D images for it) and smoothing: still one peak, centred.
    (peak,) = find_peaks(heatmaps[1:], threshold=0.1, sigma_smooth=2.0)
    assert peak[:, :2].tolist() == [[3, 3]]


def test_channels_last_maps_give_the_same_people():
    # Inference upsamples with cv2.resize, which returns (H, W, C); both functions take its
    # transposed view directly.
    truth = [person_at(5, 5, 50), person_at(30, 10, 60)]
    heatmaps, pafs = render(truth, (80, 70))
    hwc_heatmaps = np.ascontiguousarray(heatmaps.transpose(1, 2, 0)).transpose(2, 0, 1)
    hwc_pafs = np.ascontiguousarray(pafs.transpose(1, 2, 0)).transpose(2, 0, 1)
    expected = group(heatmaps, pafs)
    assert len(expected.keypoints) == 2
    got = group(hwc_heatmaps, hwc_pafs)
    np.testing.assert_array_equal(got.keypoints, expected.keypoints)
    np.testing.assert_array_equal(got.scores, expected.scores)


def test_empty_heatmap_gives_no_peaks_and_no_people():
    heatmaps = np.zeros((K, 40, 30), np.float32)
    pafs = np.zeros((2 * len(LIMBS), 40, 30), np.float32)
    peaks = find_peaks(heatmaps, threshold=0.1, sigma_smooth=3.0)
    assert [p.shape for p in peaks] == [(0, 3)] * K
    keypoints, scores = group_people(peaks, pafs, LIMBS, paf_threshold=0.05)
    assert keypoints.shape == (0, K, 3) and keypoints.dtype == np.float32
    assert scores.shape == (0,)


def test_joints_without_limb_evidence_form_no_people():
    # Peaks everywhere but PAFs all zero: nothing connects, so nobody is reported.
    heatmaps, _ = render([person_at(10, 5, 40)], (50, 40))
    pafs = np.zeros((2 * len(LIMBS), 50, 40), np.float32)
    assert len(group(heatmaps, pafs).keypoints) == 0


def test_one_person_is_recovered_joint_for_joint():
    truth = person_at(12, 6, 60)
    keypoints, scores = group(*render([truth], (70, 50)))
    assert keypoints.shape == (1, K, 3)
    np.testing.assert_array_equal(keypoints[0, :, :2], truth)
    assert scores[0] > 1.5  # joint scores ~1 plus limb scores ~1


def test_crowd_of_120_people_is_recovered():
    truth = [person_at(4 + 40 * c, 4 + 70 * r, 60) for r in range(10) for c in range(12)]
    keypoints, scores = group(*render(truth, (704, 484)))
    assert len(keypoints) == 120
    assert max(match_to_truth(keypoints, truth)) == 0.0
    assert (scores > 1.5).all()


def test_people_with_too_few_joints_are_dropped():
    truth = person_at(10, 5, 60)
    heatmaps, pafs = render([truth], (70, 50))
    heatmaps[3:] = 0.0  # only nose and eyes left: 3 joints
    assert len(group(heatmaps, pafs, min_parts=4).keypoints) == 0
    assert group(heatmaps, pafs, min_parts=3).keypoints.shape == (1, K, 3)


def test_limb_longer_than_half_the_map_is_penalised():
    # A 2-joint "person" with a perfect PAF but a limb much longer than half the map height.
    limbs = [(0, 1)]
    h, w = 20, 200
    pafs = np.zeros((2, h, w), np.float32)
    pafs[0, 10, :] = 0.5  # mean projection 0.5; the prior at 185 px is 0.5 * 20 / 185 - 1 = -0.95
    peaks = [np.array([[5, 10, 1.0]], np.float32), np.array([[190, 10, 1.0]], np.float32)]
    assert len(group_people(peaks, pafs, limbs, 0.05, min_parts=2).keypoints) == 0
    peaks[1] = np.array([[12, 10, 1.0]], np.float32)  # 7 px: shorter than h / 2
    assert len(group_people(peaks, pafs, limbs, 0.05, min_parts=2).keypoints) == 1


def test_pafs_with_the_wrong_channel_count_are_refused():
    peaks = find_peaks(np.zeros((K, 8, 8), np.float32), 0.1)
    with pytest.raises(ValueError, match="38"):
        group_people(peaks, np.zeros((36, 8, 8), np.float32), LIMBS, 0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_grouping_matches_the_reference_loop_on_overlapping_people(seed):
    # People overlap and limbs are jittered, so PAF bands cross, pairs compete, and partial
    # skeletons merge or conflict: every branch of the assembly runs.
    rng = np.random.default_rng(seed)
    truth = [person_at(*rng.uniform(0, 100, 2), rng.uniform(40, 90), rng, jitter_px=4) for _ in range(8)]
    heatmaps, pafs = render(truth, (200, 150))
    fast = group(heatmaps, pafs)
    slow = group(heatmaps, pafs, impl=reference_group_people)
    assert len(fast.keypoints) >= 3
    np.testing.assert_array_equal(fast.keypoints, slow.keypoints)
    np.testing.assert_array_equal(fast.scores, slow.scores)


def noise_maps(seed: int, shape=(60, 50)):
    """Random smooth maps: many weak peaks and PAFs pointing everywhere (ties, conflicts, merges)."""
    import cv2

    rng = np.random.default_rng(seed)
    heatmaps = np.stack([cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), 2) for _ in range(K)])
    heatmaps = (heatmaps - heatmaps.min()) / (heatmaps.max() - heatmaps.min())
    pafs = np.stack([cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 4)
                     for _ in range(2 * len(LIMBS))])
    return heatmaps, 3.0 * pafs


@pytest.mark.parametrize("seed, num_samples, count_threshold", [
    (0, 10, 0.8), (1, 10, 0.8), (2, 5, 0.5), (3, 2, 0.4), (4, 1, 0.0), (5, 7, 0.95),
])
def test_vectorised_grouping_matches_the_reference_loop_on_noise(seed, num_samples, count_threshold):
    heatmaps, pafs = noise_maps(seed)
    kwargs = dict(num_samples=num_samples, count_threshold=count_threshold, min_parts=2, min_score=0.0)
    fast = group(heatmaps, pafs, **kwargs)
    slow = group(heatmaps, pafs, impl=reference_group_people, **kwargs)
    assert len(fast.keypoints) > 0
    np.testing.assert_array_equal(fast.keypoints, slow.keypoints)
    np.testing.assert_array_equal(fast.scores, slow.scores)


def test_vectorised_grouping_matches_the_reference_loop_on_subpixel_peaks():
    # Peaks from another source (a refined decoder) need not sit on pixels.
    heatmaps, pafs = noise_maps(6)
    rng = np.random.default_rng(6)
    peaks = [np.concatenate([np.clip(p[:, :2] + rng.uniform(-0.5, 0.5, p[:, :2].shape), 0, 49), p[:, 2:]],
                            axis=1).astype(np.float32)
             for p in find_peaks(heatmaps, threshold=0.1, sigma_smooth=1.0)]
    fast = group_people(peaks, pafs, LIMBS, 0.05, min_parts=2, min_score=0.0)
    slow = reference_group_people(peaks, pafs, LIMBS, 0.05, min_parts=2, min_score=0.0)
    assert len(fast.keypoints) > 0
    np.testing.assert_array_equal(fast.keypoints, slow.keypoints)
    np.testing.assert_array_equal(fast.scores, slow.scores)


# --- the fast path: network-resolution maps, sub-pixel peaks, bilinear PAF samples ---------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("low, high", [(0.0, 49.0), (-0.9, 49.9), (-1.5, 50.5)])
def test_bilinear_grouping_matches_the_reference_loop(seed, low, high):
    # Sub-pixel peaks and bilinear samples: the vectorised scoring (with its bound-based early
    # rejection) must give the oracle's skeletons bit for bit, also with peaks beyond the first
    # and last px (refined peaks at the edges lie up to half a px out; further out is clipped).
    heatmaps, pafs = noise_maps(seed)
    rng = np.random.default_rng(seed)
    peaks = [np.concatenate([np.clip(p[:, :2] + rng.uniform(-1.5, 1.5, p[:, :2].shape), low, high), p[:, 2:]],
                            axis=1).astype(np.float32)
             for p in find_peaks(heatmaps, threshold=0.1, sigma_smooth=1.0)]
    assert low == 0.0 or min(float(p[:, :2].min()) for p in peaks if len(p)) <= low + 0.5  # the edges are reached
    kwargs = dict(min_parts=2, min_score=0.0, interpolation="bilinear")
    fast = group_people(peaks, pafs, LIMBS, 0.05, **kwargs)
    slow = reference_group_people(peaks, pafs, LIMBS, 0.05, **kwargs)
    assert len(fast.keypoints) > 0
    np.testing.assert_array_equal(fast.keypoints, slow.keypoints)
    np.testing.assert_array_equal(fast.scores, slow.scores)


def test_bilinear_grouping_matches_the_reference_loop_on_overlapping_people():
    rng = np.random.default_rng(5)
    truth = [person_at(*rng.uniform(0, 100, 2), rng.uniform(40, 90), rng, jitter_px=4) for _ in range(8)]
    heatmaps, pafs = render(truth, (200, 150))
    peaks = refine_peaks(heatmaps, find_peaks(heatmaps, 0.05, 1.0, cross=True), 0.1)
    fast = group_people(peaks, pafs, LIMBS, 0.05, interpolation="bilinear")
    slow = reference_group_people(peaks, pafs, LIMBS, 0.05, interpolation="bilinear")
    assert len(fast.keypoints) >= 3
    np.testing.assert_array_equal(fast.keypoints, slow.keypoints)
    np.testing.assert_array_equal(fast.scores, slow.scores)


def test_refined_peaks_land_on_subpixel_gaussian_centres():
    # Gaussians centred between grid points: refinement recovers the centre and the height.
    centres = np.array([[10.3, 12.8], [25.5, 6.25], [0.0, 20.4]])
    ys, xs = np.mgrid[0:30, 0:40].astype(np.float64)
    heatmaps = np.stack([np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 0.9**2))
                         for x, y in centres]).astype(np.float32)
    peaks = refine_peaks(heatmaps, find_peaks(heatmaps, 0.05, 0.0, cross=True), 0.1)
    for (x, y), found in zip(centres, peaks):
        assert found.shape == (1, 3)
        assert abs(found[0, 0] - x) < 1e-3 and abs(found[0, 1] - y) < 1e-3, (found, x, y)
        assert abs(found[0, 2] - 1.0) < 1e-3


def test_refined_peaks_are_where_taos_upsampled_decode_finds_them():
    # TAO/OpenPose: every map upsampled x8 (bicubic), smoothed (sigma 3 upsampled px), local maxima.
    # refine_peaks reaches the same maxima from the map's own peaks without upsampling the maps,
    # then moves at most half a 1/8 px step between them.
    import cv2

    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:30, 0:40].astype(np.float64)
    centres = rng.uniform((3, 3), (37, 27), (6, 2))
    widths = rng.uniform(0.7, 1.6, 6)
    heatmaps = np.stack([np.exp(-((xs - x) ** 2 / (2 * w**2) + (ys - y) ** 2 / (2 * (1.3 * w) ** 2)))
                         for (x, y), w in zip(centres, widths)]).astype(np.float32)
    heatmaps += rng.uniform(0, 0.05, heatmaps.shape).astype(np.float32)  # not a perfect Gaussian
    peaks = refine_peaks(heatmaps, find_peaks(heatmaps, 0.3, 3.0 / 8, cross=True), 0.3, 3.0 / 8)
    upsampled = cv2.resize(heatmaps.transpose(1, 2, 0), (320, 240), interpolation=cv2.INTER_CUBIC)
    tao = find_peaks(upsampled.transpose(2, 0, 1), 0.3, 3.0)
    for found, want in zip(peaks, tao):
        assert found.shape == (1, 3) and want.shape == (1, 3)
        want_map_px = (want[0, :2] + 0.5) / 8 - 0.5
        np.testing.assert_allclose(found[0, :2], want_map_px, atol=0.5 / 8 + 1e-5)
        assert abs(found[0, 2] - want[0, 2]) < 0.02  # the upsampled map's value there


def test_refined_peaks_of_close_joints_are_the_maxima_taos_decode_finds_once_each():
    # Two joints of one kind 0.6-3 map px apart, in shapes no Gaussian fits (a trained network's):
    # the maxima of the upsampled, smoothed maps (TAO's decode, 8-neighbour peaks) near the
    # map-resolution candidates, each once (duplicates split people in grouping), also where the
    # two joints are one maximum at map resolution; a candidate with no maximum near gives none.
    import cv2

    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:24, 0:32].astype(np.float64)
    maps = []
    for _ in range(120):
        first = rng.uniform((8, 8), (24, 16))
        angle, distance = rng.uniform(0, np.pi), rng.uniform(0.6, 3.0)
        second = first + distance * np.array([np.cos(angle), np.sin(angle)])
        blobs = [np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * rng.uniform(0.6, 1.2) ** 2)) ** rng.uniform(0.7, 1.4)
                 for x, y in (first, second)]
        maps.append(blobs[0] + rng.uniform(0.4, 1.0) * blobs[1])
    heatmaps = np.stack(maps).astype(np.float32)
    peaks = refine_peaks(heatmaps, find_peaks(heatmaps, 0.15, 3.0 / 8, cross=True), 0.3, 3.0 / 8)
    upsampled = cv2.resize(heatmaps.transpose(1, 2, 0), (32 * 8, 24 * 8), interpolation=cv2.INTER_CUBIC)
    tao = find_peaks(upsampled.transpose(2, 0, 1), 0.3, 3.0)

    def close_pairs(points: np.ndarray) -> int:  # peaks under 2 upsampled px apart: one joint twice
        gaps = np.linalg.norm(points[:, None] - points[None], axis=2)
        return int((gaps[np.triu_indices(len(points), 1)] < 0.25).sum())

    for found, want in zip(peaks, tao):
        assert close_pairs(found[:, :2]) <= close_pairs((want[:, :2] + 0.5) / 8 - 0.5)
    same = [len(found) == len(want) for found, want in zip(peaks, tao)]
    # Each candidate's 3x3 map px are searched: 98 % of the maps give TAO's count (92.5 % when a
    # candidate gave only the maximum of its own px).
    assert np.mean(same) >= 0.97


def test_refinement_drops_peaks_below_the_threshold_and_keeps_non_positive_maps_finite():
    heatmaps = np.zeros((2, 9, 9), np.float32)
    heatmaps[0, 4, 4], heatmaps[0, 4, 5] = 0.08, 0.02  # below 0.1 once refined
    heatmaps[1, 4, 4], heatmaps[1, 4, 3] = 0.9, -0.2  # a negative neighbour: no logs, no Gaussian
    peaks = refine_peaks(heatmaps, find_peaks(heatmaps, 0.01, 0.0), 0.1)
    assert peaks[0].shape == (0, 3)
    assert peaks[1].shape == (1, 3) and np.isfinite(peaks[1]).all()
    assert 4.0 <= peaks[1][0, 0] <= 4.5 and peaks[1][0, 1] == pytest.approx(4.0, abs=1e-5)  # away from the dip


def test_cross_peaks_part_the_same_joint_of_two_people_diagonally_adjacent():
    heatmaps = np.zeros((1, 9, 9), np.float32)
    heatmaps[0, 3, 3], heatmaps[0, 4, 4] = 1.0, 0.9
    assert len(find_peaks(heatmaps, 0.1, 0.0)[0]) == 1  # 3x3 maxima merge them
    assert len(find_peaks(heatmaps, 0.1, 0.0, cross=True)[0]) == 2


def test_find_people_recovers_a_crowd_at_network_resolution():
    # People drawn at input resolution, then the maps shrunk 8x as the network would output them:
    # find_people works on the small maps and its joints land within a pixel of the truth.
    import cv2

    truth = [person_at(4 + 80 * c, 4 + 140 * r, 120) for r in range(3) for c in range(4)]
    heatmaps, pafs = render(truth, (432, 328), sigma_px=7.0, band_px=8.0)
    small = lambda maps: cv2.resize(maps.transpose(1, 2, 0), (41, 54), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)  # noqa: E731
    keypoints, scores = find_people(small(heatmaps), small(pafs), LIMBS, 0.1, 0.05, 3 / 8)
    assert len(keypoints) == len(truth)
    input_px = keypoints[:, :, :2] * 8 + 3.5
    errors = match_to_truth(np.concatenate([input_px, keypoints[:, :, 2:]], axis=2), truth)
    assert max(errors) < 4.0, errors


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_limbs_scored_in_small_groups_give_the_same_people(monkeypatch, interpolation):
    # Big crowds are scored a few limbs at a time (CHUNK_PAIRS); the groups must not change a thing.
    import pose_workloads.grouping as grouping

    heatmaps, pafs = noise_maps(7)
    peaks = find_peaks(heatmaps, threshold=0.1, sigma_smooth=1.0)
    kwargs = dict(min_parts=2, min_score=0.0, interpolation=interpolation)
    expected = reference_group_people(peaks, pafs, LIMBS, 0.05, **kwargs)
    monkeypatch.setattr(grouping, "CHUNK_PAIRS", 7)
    got = group_people(peaks, pafs, LIMBS, 0.05, **kwargs)
    assert len(got.keypoints) > 0
    np.testing.assert_array_equal(got.keypoints, expected.keypoints)
    np.testing.assert_array_equal(got.scores, expected.scores)
