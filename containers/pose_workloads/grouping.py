"""Bottom-up grouping: joint peaks from heatmaps, people from part affinity fields (PAFs).

The algorithm is OpenPose's (Cao et al., arXiv 1611.08050, and TAO BodyPoseNet's post-processing):

1. `find_peaks`: smooth each heatmap with a Gaussian, keep local maxima of a 3x3 max-pool above a
   threshold (one per plateau). A peak's score is the unsmoothed heatmap value there (what the
   network said).
2. `group_people`: for every limb (joint A -> joint B), score every (A peak, B peak) pair by the
   line integral of the limb's PAF along the segment: `num_samples` points, each projecting the
   PAF vector on the segment's unit vector. A pair is a candidate when more than
   `count_threshold` of the samples exceed `paf_threshold` and the mean projection plus a distance
   prior (`min(0.5 * map_height / length - 1, 0)`, penalising limbs longer than half the map) is
   positive. Candidates are matched greedily, best score first, one-to-one per limb. The limb
   connections are then merged into people by shared joints (the union of partial skeletons).
   People with fewer than `min_parts` joints or a mean score below `min_score` are dropped.

Why this module is vectorised: Python grouping dominates bottom-up latency in the field (2.4 s vs
0.06 s for the network on a crowded image, lightweight-human-pose-estimation.pytorch #3). Here the
pairs of all limbs are scored at once (`score_limb_candidates`): one flat array of pairs, NumPy
gathers over their sample points, and an exact early rejection of pairs that already missed too
many samples. Assembly looks up each peak's owner in an array instead of scanning the people found
so far. `bench/bench_grouping.py`: 30 people, ~60x faster than the loops with the same skeletons.
`reference_group_people` is the straightforward loop version (pytorch-openpose's structure); it
returns identical skeletons and exists for tests and `bench/bench_grouping.py`.

Where OpenPose has quirks, both versions here keep one rule: a peak belongs to at most one person.
A connection whose joint slot is already taken by another peak is ignored (OpenPose overwrites the
slot and leaves the old peak counted in the score), and two people that share a joint slot are not
merged (OpenPose then adds the B peak to the first person, so one peak can end up in two people).

Sampling is nearest-pixel (`np.rint`), as in OpenPose: the maps are upsampled x8 (bicubic) before
grouping, so a nearest sample of the upsampled map is already an interpolated network output, and
integer gathers keep the reference loop bit-identical to the vectorised version.

Coordinates: everything here is in pixels of the maps given (`x` = column, `y` = row); callers map
them back to image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np


class People(NamedTuple):
    """Grouped people. Unpacks as `(keypoints, scores)`."""

    keypoints: np.ndarray  # (P, K, 3) float32: x, y, peak score; a missing joint is (0, 0, 0)
    scores: np.ndarray  # (P,) float32: (sum of joint scores + sum of limb scores) / joints found


def find_peaks(heatmaps: np.ndarray, threshold: float, sigma_smooth: float = 3.0) -> list[np.ndarray]:
    """Local maxima of each joint heatmap.

    Args:
        heatmaps: (K, H, W) float32, joint channels only (no background), map pixels. Work happens
            channels-last, so a `(H, W, K)` array passed as `maps.transpose(2, 0, 1)` (what
            `cv2.resize` gives) is used without a copy.
        threshold: a peak's smoothed value must exceed this.
        sigma_smooth: Gaussian sigma in map pixels applied before the 3x3 max-pool; 0 = none.

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
    pooled = cv2.dilate(smoothed, np.ones((3, 3), np.uint8)).reshape(height, width, num_joints)
    is_max = (smoothed >= pooled) & (smoothed > threshold)
    # flatnonzero + divmod: several times faster than a 3-D np.nonzero on big maps.
    pixel, joint = np.divmod(np.flatnonzero(is_max), num_joints)
    y, x = np.divmod(pixel, width)

    # A plateau (equal neighbours, e.g. a joint exactly between two grid points) must give one
    # peak, not two that split a person: a peak must also beat, strictly, the neighbours before it
    # in raster order (the row above and the pixel to the left). Checked on the few maxima only.
    value = smoothed[y, x, joint]
    first = np.ones(len(y), bool)
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (nx >= 0) & (nx < width)
        first[inside] &= value[inside] > smoothed[ny[inside], nx[inside], joint[inside]]
    y, x, joint = y[first], x[first], joint[first]

    order = np.argsort(joint, kind="stable")  # per joint, keeping raster order
    y, x, joint = y[order], x[order], joint[order]
    found = np.stack([x, y, channels_last[y, x, joint]], axis=1).astype(np.float32)
    return np.split(found, np.searchsorted(joint, np.arange(1, num_joints)))


class Candidates(NamedTuple):
    """Limb candidates of every limb, sorted by limb, then best score first (ties keep A-major
    order). Limb l's rows are `bounds[l]:bounds[l + 1]`."""

    ia: np.ndarray  # (C,) int64: peak index into peaks[limb's joint A]
    ib: np.ndarray  # (C,) int64: peak index into peaks[limb's joint B]
    score: np.ndarray  # (C,) float64: mean PAF projection + distance prior
    bounds: np.ndarray  # (L + 1,) int64


def score_limb_candidates(
    peaks: Sequence[np.ndarray],
    pafs: np.ndarray,
    limbs: Sequence[tuple[int, int]],
    paf_threshold: float,
    num_samples: int = 10,
    count_threshold: float = 0.8,
) -> Candidates:
    """Score every (A peak, B peak) pair of every limb in one pass and keep those passing both
    criteria (see the module doc). Arguments as `group_people`.

    All pairs of all limbs are one flat array, so the cost is a handful of NumPy calls whatever the
    number of limbs; each pair's samples gather from the flattened PAF stack.
    """
    num_limbs = len(limbs)
    _, height, width = pafs.shape
    counts = np.array([len(p) for p in peaks], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    all_peaks = np.concatenate([np.asarray(p, np.float32).reshape(-1, 3) for p in peaks]) if len(peaks) else np.zeros((0, 3), np.float32)
    joint_a = np.array([a for a, _ in limbs], np.int64).reshape(-1)
    joint_b = np.array([b for _, b in limbs], np.int64).reshape(-1)
    num_a, num_b = counts[joint_a], counts[joint_b]
    sizes = num_a * num_b

    # Pair p belongs to limb limb_of[p] and is (i, j) = divmod(p - first pair of that limb, nB).
    limb_of = np.repeat(np.arange(num_limbs), sizes)
    within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    ia, ib = np.divmod(within, np.maximum(num_b[limb_of], 1))
    at_a = all_peaks[offsets[joint_a][limb_of] + ia]
    at_b = all_peaks[offsets[joint_b][limb_of] + ib]
    ax, ay = at_a[:, 0].astype(np.float64), at_a[:, 1].astype(np.float64)
    dx, dy = at_b[:, 0].astype(np.float64) - ax, at_b[:, 1].astype(np.float64) - ay
    norm = np.maximum(np.sqrt(dx * dx + dy * dy), 1e-3)
    ux, uy = dx / norm, dy / norm
    t = np.linspace(0.0, 1.0, num_samples)
    if pafs.transpose(1, 2, 0).flags.c_contiguous:
        # (H, W, 2L) in memory, as cv2.resize returns maps: used as is, and a sample's x and y
        # components share a cache line.
        flat_pafs = pafs.transpose(1, 2, 0).reshape(-1)
        pixel_step, channel_step = 2 * num_limbs, 1
    else:
        flat_pafs = np.ascontiguousarray(pafs).reshape(-1)
        pixel_step, channel_step = 1, height * width
    channel_x = 2 * limb_of * channel_step

    def project(pairs: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """(len(pairs), len(samples)) float64 projections of the PAF on each pair's direction."""
        xs = np.rint(ax[pairs, None] + dx[pairs, None] * t[samples]).astype(np.intp)
        ys = np.rint(ay[pairs, None] + dy[pairs, None] * t[samples]).astype(np.intp)
        at = channel_x[pairs, None] + (ys * width + xs) * pixel_step
        return flat_pafs[at] * ux[pairs, None] + flat_pafs[at + channel_step] * uy[pairs, None]

    # A pair needs more than count_threshold * S samples above the threshold, so it may miss at
    # most `max_misses`. Most pairs join different people and miss most samples: a few samples,
    # one at a time over the pairs still in, reject them exactly; only the rest pay for all S.
    # The end samples come first: they sit on the peaks themselves (t = 0 and 1), whose pixels are
    # computed once per peak, and their gathers hit the same few addresses again and again.
    max_misses = num_samples - (math.floor(count_threshold * num_samples) + 1)
    pairs = np.arange(len(ax)) if max_misses >= 0 else np.zeros(0, np.int64)
    misses = np.zeros(len(pairs), np.int64)
    peak_pixel = (np.rint(all_peaks[:, 1].astype(np.float64)) * width + np.rint(all_peaks[:, 0].astype(np.float64))).astype(np.intp)
    end_pixel = {0: peak_pixel[offsets[joint_a][limb_of] + ia]}
    if num_samples >= 2 and np.array_equal(ax + dx * t[-1], at_b[:, 0].astype(np.float64)) and np.array_equal(
        ay + dy * t[-1], at_b[:, 1].astype(np.float64)
    ):  # ax + (bx - ax) == bx for pixel coordinates; checked, not assumed
        end_pixel[num_samples - 1] = peak_pixel[offsets[joint_b][limb_of] + ib]
    middle = [int(m) for m in np.round(np.linspace(0, num_samples - 1, max_misses + 4)[1:-1])]
    for s in dict.fromkeys([0, num_samples - 1, *middle]):  # unique, in this order
        if len(pairs) == 0:
            break
        if s in end_pixel:
            at = channel_x[pairs] + end_pixel[s][pairs] * pixel_step
            value = flat_pafs[at] * ux[pairs] + flat_pafs[at + channel_step] * uy[pairs]
        else:
            value = project(pairs, np.array([s]))[:, 0]
        misses += ~(value > paf_threshold)
        keep = misses <= max_misses
        pairs, misses = pairs[keep], misses[keep]

    proj = project(pairs, np.arange(num_samples))
    # Summed sample by sample, in the reference loop's order, so both give bit-identical scores.
    total = np.zeros(len(pairs))
    for s in range(num_samples):
        total = total + proj[:, s]
    above = np.count_nonzero(proj > paf_threshold, axis=1)
    score = total / num_samples + np.minimum(0.5 * height / norm[pairs] - 1.0, 0.0)
    passed = (above > count_threshold * num_samples) & (score > 0)
    pairs, score = pairs[passed], score[passed]
    order = np.lexsort((-score, limb_of[pairs]))  # stable: equal scores keep A-major order
    pairs, score = pairs[order], score[order]
    bounds = np.searchsorted(limb_of[pairs], np.arange(num_limbs + 1))
    return Candidates(ia[pairs], ib[pairs], score, bounds)


def _match_greedy(ia: np.ndarray, ib: np.ndarray, score: np.ndarray, max_matches: int) -> list[tuple[int, int, float]]:
    """One-to-one matching: walk the candidates best first, keep a pair when both peaks are free."""
    used_a: set[int] = set()
    used_b: set[int] = set()
    matches = []
    for i, j, s in zip(ia.tolist(), ib.tolist(), score.tolist()):
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        matches.append((i, j, s))
        if len(matches) >= max_matches:
            break
    return matches


def _check_inputs(peaks: Sequence[np.ndarray], pafs: np.ndarray, limbs: Sequence[tuple[int, int]]) -> None:
    if pafs.ndim != 3 or pafs.shape[0] != 2 * len(limbs):
        raise ValueError(f"pafs must be (2L, H, W) = ({2 * len(limbs)}, H, W) for {len(limbs)} limbs, got {pafs.shape}")
    for a, b in limbs:
        if not (0 <= a < len(peaks) and 0 <= b < len(peaks)):
            raise ValueError(f"limb ({a}, {b}) is outside the {len(peaks)} joints given")


def _to_people(
    peaks: Sequence[np.ndarray], joints: list[list[int]], totals: list[float], counts: list[int], min_parts: int, min_score: float
) -> People:
    num_joints = len(peaks)
    keep = [p for p in range(len(joints)) if counts[p] >= min_parts and totals[p] / counts[p] >= min_score]
    keypoints = np.zeros((len(keep), num_joints, 3), np.float32)
    for row, p in enumerate(keep):
        for k, peak in enumerate(joints[p]):
            if peak >= 0:
                keypoints[row, k] = peaks[k][peak]
    scores = np.array([totals[p] / counts[p] for p in keep], np.float32)
    return People(keypoints, scores)


def group_people(
    peaks: Sequence[np.ndarray],
    pafs: np.ndarray,
    limbs: Sequence[tuple[int, int]],
    paf_threshold: float,
    num_samples: int = 10,
    count_threshold: float = 0.8,
    min_parts: int = 4,
    min_score: float = 0.4,
) -> People:
    """Assemble people from joint peaks and PAFs.

    Args:
        peaks: K arrays (N_k, 3) float32 of (x, y, score) in map pixels, as from `find_peaks`.
        pafs: (2L, H, W) float32, same pixels as the peaks; channel 2i is x and 2i+1 is y of limb i.
            A `(H, W, 2L)` array passed as `maps.transpose(2, 0, 1)` is used without a copy.
        limbs: L (joint A, joint B) pairs, 0-based, the PAF channel order.
        paf_threshold: a sample counts when its projection exceeds this.
        num_samples: points sampled along each candidate limb.
        count_threshold: fraction of samples that must exceed `paf_threshold`.
        min_parts: people with fewer joints are dropped.
        min_score: people whose (joint scores + limb scores) / joints is below this are dropped.

    Returns:
        People: keypoints (P, K, 3) float32 (x, y, score; missing joints all zero) and scores (P,)
        float32, in the order people were first connected.
    """
    pafs = np.asarray(pafs, dtype=np.float32)
    _check_inputs(peaks, pafs, limbs)
    num_joints = len(peaks)
    # owner[k][n]: the person holding peak n of joint k, or -1. A peak belongs to at most one
    # person, so this array answers what OpenPose finds by scanning every person per connection.
    owner = [[-1] * len(p) for p in peaks]
    joints: list[list[int]] = []  # per person: peak index per joint, -1 = missing
    totals: list[float] = []
    counts: list[int] = []
    alive: list[bool] = []
    candidates = score_limb_candidates(peaks, pafs, limbs, paf_threshold, num_samples, count_threshold)
    for limb, (a, b) in enumerate(limbs):
        cand_a, cand_b = peaks[a], peaks[b]
        rows = slice(candidates.bounds[limb], candidates.bounds[limb + 1])
        matches = _match_greedy(candidates.ia[rows], candidates.ib[rows], candidates.score[rows], min(len(cand_a), len(cand_b)))
        for i, j, s in matches:
            pa, pb = owner[a][i], owner[b][j]
            if pa < 0 and pb < 0:
                row = [-1] * num_joints
                row[a], row[b] = i, j
                owner[a][i] = owner[b][j] = len(joints)
                joints.append(row)
                totals.append((float(cand_a[i, 2]) + float(cand_b[j, 2])) + s)
                counts.append(2)
                alive.append(True)
            elif pa >= 0 and pb < 0:
                if joints[pa][b] < 0:
                    joints[pa][b] = j
                    owner[b][j] = pa
                    totals[pa] += float(cand_b[j, 2]) + s
                    counts[pa] += 1
            elif pb >= 0 and pa < 0:
                if joints[pb][a] < 0:
                    joints[pb][a] = i
                    owner[a][i] = pb
                    totals[pb] += float(cand_a[i, 2]) + s
                    counts[pb] += 1
            elif pa != pb:
                keep, gone = min(pa, pb), max(pa, pb)
                if all(x < 0 or y < 0 for x, y in zip(joints[keep], joints[gone])):
                    for k, peak in enumerate(joints[gone]):
                        if peak >= 0:
                            joints[keep][k] = peak
                            owner[k][peak] = keep
                    totals[keep] += totals[gone]
                    totals[keep] += s
                    counts[keep] += counts[gone]
                    alive[gone] = False
    live = [p for p in range(len(joints)) if alive[p]]
    return _to_people(
        peaks, [joints[p] for p in live], [totals[p] for p in live], [counts[p] for p in live], min_parts, min_score
    )


def reference_group_people(
    peaks: Sequence[np.ndarray],
    pafs: np.ndarray,
    limbs: Sequence[tuple[int, int]],
    paf_threshold: float,
    num_samples: int = 10,
    count_threshold: float = 0.8,
    min_parts: int = 4,
    min_score: float = 0.4,
) -> People:
    """`group_people` written as plain loops (pytorch-openpose's body.py structure): one pair and
    one sample at a time, and every connection scans the people found so far. Same arguments and
    identical results; kept for tests and the benchmark, not for use."""
    pafs = np.asarray(pafs, dtype=np.float32)
    _check_inputs(peaks, pafs, limbs)
    num_joints = len(peaks)
    map_height = pafs.shape[1]
    t = np.linspace(0.0, 1.0, num_samples)
    subset: list[list] = []  # per person: [peak index per joint..., total score, joint count]
    for limb, (a, b) in enumerate(limbs):
        cand_a, cand_b = peaks[a], peaks[b]
        paf_x, paf_y = pafs[2 * limb], pafs[2 * limb + 1]
        candidates = []
        for i in range(len(cand_a)):
            for j in range(len(cand_b)):
                ax, ay = float(cand_a[i, 0]), float(cand_a[i, 1])
                dx, dy = float(cand_b[j, 0]) - ax, float(cand_b[j, 1]) - ay
                norm = max(math.sqrt(dx * dx + dy * dy), 1e-3)
                ux, uy = dx / norm, dy / norm
                total, above = 0.0, 0
                for s in range(num_samples):
                    x = int(np.rint(ax + dx * t[s]))
                    y = int(np.rint(ay + dy * t[s]))
                    proj = float(paf_x[y, x]) * ux + float(paf_y[y, x]) * uy
                    total += proj
                    above += proj > paf_threshold
                score = total / num_samples + min(0.5 * map_height / norm - 1.0, 0.0)
                if above > count_threshold * num_samples and score > 0:
                    candidates.append((i, j, score))
        candidates.sort(key=lambda c: c[2], reverse=True)
        connections: list[tuple[int, int, float]] = []
        for i, j, s in candidates:
            if any(i == ci or j == cj for ci, cj, _ in connections):
                continue
            connections.append((i, j, s))
            if len(connections) >= min(len(cand_a), len(cand_b)):
                break

        for i, j, s in connections:
            found = [row for row in subset if row[a] == i or row[b] == j]
            if not found:
                row = [-1] * num_joints + [(float(cand_a[i, 2]) + float(cand_b[j, 2])) + s, 2]
                row[a], row[b] = i, j
                subset.append(row)
            elif len(found) == 1:
                row = found[0]
                if row[a] == i and row[b] < 0:
                    row[b] = j
                    row[-2] += float(cand_b[j, 2]) + s
                    row[-1] += 1
                elif row[b] == j and row[a] < 0:
                    row[a] = i
                    row[-2] += float(cand_a[i, 2]) + s
                    row[-1] += 1
            else:
                first, second = found
                if all(x < 0 or y < 0 for x, y in zip(first[:num_joints], second[:num_joints])):
                    for k in range(num_joints):
                        if second[k] >= 0:
                            first[k] = second[k]
                    first[-2] += second[-2]
                    first[-2] += s
                    first[-1] += second[-1]
                    subset = [row for row in subset if row is not second]
    return _to_people(peaks, [r[:num_joints] for r in subset], [r[-2] for r in subset], [r[-1] for r in subset], min_parts, min_score)
