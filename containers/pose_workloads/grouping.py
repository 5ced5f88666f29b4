"""Bottom-up grouping: people from joint peaks and part affinity fields (PAFs).

The algorithm is OpenPose's (Cao et al., arXiv 1611.08050, and TAO BodyPoseNet's post-processing).
`group_people`: for every limb (joint A -> joint B), score every (A peak, B peak) pair by the line
integral of the limb's PAF along the segment: `num_samples` points, each projecting the PAF vector
on the segment's unit vector. A pair is a candidate when more than `count_threshold` of the
samples exceed `paf_threshold` and the mean projection plus a distance prior
(`min(0.5 * map_height / length - 1, 0)`, penalising limbs longer than half the map) is positive.
Candidates are matched greedily, best score first, one-to-one per limb; the connections are merged
into people by shared joints. People with fewer than `min_parts` joints or a mean score below
`min_score` are dropped.

Two ways in (peaks.py finds the peaks):
- `find_people`, the default: maps at the network's resolution (stride 8), sub-pixel peaks,
  bilinear PAF samples. No upsampling at all.
- TAO's exact decode: maps upsampled x8 (bicubic) by the caller, integer peaks, nearest-pixel
  samples (`interpolation="nearest"`), as OpenPose.
bench/bench_grouping.py times both against OpenPose's decode as the peers ship it, and scores
them on crowds.

Why it is vectorised: Python grouping dominates bottom-up latency in the field (2.4 s vs 0.06 s
for the network on a crowded image, lightweight-human-pose-estimation.pytorch #3). The pairs of all
limbs are scored at once (`score_limb_candidates`), with exact early rejections; assembly looks up
each peak's owner in an array instead of scanning the people found so far.
grouping_reference.py is the same grouping as plain loops, the tests' oracle (bit-identical).

Where OpenPose has quirks, both keep one rule: a peak belongs to at most one person. A connection
whose joint slot is already taken by another peak is ignored (OpenPose overwrites the slot and
leaves the old peak counted in the score), and two people that share a joint slot are not merged
(OpenPose then adds the B peak to the first person, so one peak can end up in two people).

Coordinates: everything here is in pixels of the maps given (`x` = column, `y` = row); callers map
them back to image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import cv2
import numpy as np

from pose_workloads.peaks import find_peaks, refine_peaks


class People(NamedTuple):
    """Grouped people. Unpacks as `(keypoints, scores)`."""

    keypoints: np.ndarray  # (P, K, 3) float32: x, y, peak score; a missing joint is (0, 0, 0)
    scores: np.ndarray  # (P,) float32: (sum of joint scores + sum of limb scores) / joints found


class Candidates(NamedTuple):
    """Limb candidates of every limb, sorted by limb, then best score first (ties keep A-major
    order). Limb l's rows are `bounds[l]:bounds[l + 1]`."""

    ia: np.ndarray  # (C,) int64: peak index into peaks[limb's joint A]
    ib: np.ndarray  # (C,) int64: peak index into peaks[limb's joint B]
    score: np.ndarray  # (C,) float64: mean PAF projection + distance prior
    bounds: np.ndarray  # (L + 1,) int64


# Pairs scored per NumPy pass: limbs are taken in groups of about this many pairs (100 people:
# 150k pairs), so that a pass's float64 arrays stay under glibc's 128 KiB mmap threshold. Bigger
# ones are mapped and unmapped on every call, and their page faults cost more than the arithmetic
# (100 people: 1.3-1.6x slower with groups of 32k pairs).
CHUNK_PAIRS = 16000


def score_limb_candidates(peaks: Sequence[np.ndarray], pafs: np.ndarray, limbs: Sequence[tuple[int, int]],
                          paf_threshold: float, num_samples: int, count_threshold: float,
                          interpolation: str) -> Candidates:
    """Score every (A peak, B peak) pair of every limb and keep those passing both criteria (see
    the module doc). Arguments as `group_people`, which holds their defaults.

    The pairs of many limbs are one flat array, so the cost is a handful of NumPy calls per group
    of limbs; each pair's samples gather from the flattened PAF stack.
    """
    if interpolation not in ("nearest", "bilinear"):
        raise ValueError(f"interpolation {interpolation!r}: use nearest or bilinear")
    num_limbs = len(limbs)
    counts = np.array([len(p) for p in peaks], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    all_peaks = (np.concatenate([np.asarray(p, np.float32).reshape(-1, 3) for p in peaks]) if len(peaks)
                 else np.zeros((0, 3), np.float32))
    peak_x, peak_y = all_peaks[:, 0].astype(np.float64), all_peaks[:, 1].astype(np.float64)
    joint_a = np.array([a for a, _ in limbs], np.int64).reshape(-1)
    joint_b = np.array([b for _, b in limbs], np.int64).reshape(-1)
    field = _PafField(pafs, interpolation == "bilinear", peak_x, peak_y)
    t = np.linspace(0.0, 1.0, num_samples)
    # A pair needs more than count_threshold * S samples above the threshold: it may miss at most
    # `max_misses`.
    max_misses = num_samples - (math.floor(count_threshold * num_samples) + 1)
    sizes = counts[joint_a] * counts[joint_b]
    if max_misses < 0 or num_limbs == 0:
        return Candidates(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(num_limbs + 1, np.int64))
    # The samples tested first: a few spread along the limb, away from its ends.
    spread = sorted({int(m) for m in np.round(np.linspace(0, num_samples - 1, max_misses + 4)[1:-1])}
                    - {0, num_samples - 1})

    # The end samples (t = 0 and 1) sit on the peaks: their PAF vectors are read once per (limb,
    # peak), not once per pair. Limb l's vector at peak i of its joint A is row first[0][l] + i of
    # (end_x, end_y), at peak j of its joint B row first[1][l] + j.
    peak_counts = np.concatenate([counts[joint_a], counts[joint_b]])
    starts = np.cumsum(peak_counts) - peak_counts
    row_limb = np.repeat(np.arange(2 * num_limbs), peak_counts)
    row_peak = (np.concatenate([offsets[joint_a], offsets[joint_b]])[row_limb] + np.arange(int(peak_counts.sum()))
                - starts[row_limb])
    end_x, end_y = field.at(row_limb % num_limbs, peak_x[row_peak], peak_y[row_peak])
    first = (starts[:num_limbs], starts[num_limbs:])

    def score_limbs(limb_ids: np.ndarray) -> tuple[np.ndarray, ...]:
        """(ia, ib, score, limb) of the candidates of these limbs, by limb, best first."""
        limb_sizes = sizes[limb_ids]
        # Pair p is (i, j) = divmod(p - first pair of its limb, nB) of limb limb_of[p].
        limb_of = np.repeat(limb_ids, limb_sizes)
        within = np.arange(int(limb_sizes.sum())) - np.repeat(np.cumsum(limb_sizes) - limb_sizes, limb_sizes)
        ia, ib = np.divmod(within, np.maximum(counts[joint_b], 1)[limb_of])
        peak_a, peak_b = offsets[joint_a][limb_of] + ia, offsets[joint_b][limb_of] + ib
        ax, ay, bx, by = peak_x[peak_a], peak_y[peak_a], peak_x[peak_b], peak_y[peak_b]
        dx, dy = bx - ax, by - ay

        # Most pairs join different people and miss most samples: exact, cheap tests drop them
        # before the survivors pay for all S samples. First a few samples spread along the limb,
        # where the PAF is too weak for any direction: one gather per sample, no direction needed.
        misses = np.zeros(len(ax), np.int64)
        for sample in spread:  # a row at a time: arrays of a chunk's size (see CHUNK_PAIRS)
            ts = t[sample:sample + 1, None]
            misses += field.sure_misses(limb_of, ax + dx * ts, ay + dy * ts, paf_threshold)
        pairs = np.flatnonzero(misses <= max_misses)
        ia, ib, ax, ay, dx, dy, limb_of, misses = (a[pairs] for a in (ia, ib, ax, ay, dx, dy, limb_of, misses))
        norm = np.maximum(np.sqrt(dx * dx + dy * dy), 1e-3)
        ux, uy = dx / norm, dy / norm

        # Then the ends. ax + (bx - ax) == bx holds for coordinates that are float32 values (their
        # difference is exact in float64): checked, not assumed.
        ends = [0] + [num_samples - 1] * (num_samples >= 2 and np.array_equal(ax + dx * t[-1], bx[pairs])
                                           and np.array_equal(ay + dy * t[-1], by[pairs]))
        for limb_start, index in zip(first[:len(ends)], (ia, ib)):
            row = limb_start[limb_of] + index
            misses += ~(end_x[row] * ux + end_y[row] * uy > paf_threshold)
        # Index arrays, not boolean masks, select the pairs left: several times faster in NumPy.
        # Arrays are samples x pairs, so NumPy's inner loops run over the many pairs (a short last
        # axis is several times slower).
        pairs = np.flatnonzero(misses <= max_misses)
        rest = [s for s in range(num_samples) if s not in ends and s not in spread]
        if len(pairs) and rest:
            ts = t[rest, None]
            misses = misses[pairs] + field.sure_misses(limb_of[pairs], ax[pairs] + dx[pairs] * ts,
                                                       ay[pairs] + dy[pairs] * ts, paf_threshold)
            pairs = pairs[np.flatnonzero(misses <= max_misses)]

        vx, vy = field.at(limb_of[pairs], ax[pairs] + dx[pairs] * t[:, None], ay[pairs] + dy[pairs] * t[:, None])
        proj = vx * ux[pairs] + vy * uy[pairs]  # (S, pairs)
        # Summed sample by sample, in the reference loop's order, so both give bit-identical scores.
        total = np.zeros(len(pairs))
        for s in range(num_samples):
            total = total + proj[s]
        above = (proj > paf_threshold).sum(axis=0)
        score = total / num_samples + np.minimum(0.5 * field.height / norm[pairs] - 1.0, 0.0)
        passed = np.flatnonzero((above > count_threshold * num_samples) & (score > 0))
        pairs, score = pairs[passed], score[passed]
        order = np.lexsort((-score, limb_of[pairs]))  # stable: equal scores keep A-major order
        pairs, score = pairs[order], score[order]
        return ia[pairs], ib[pairs], score, limb_of[pairs]

    groups, start, total = [], 0, 0
    for limb in range(num_limbs):
        if limb > start and total + sizes[limb] > CHUNK_PAIRS:
            groups.append(np.arange(start, limb))
            start, total = limb, 0
        total += sizes[limb]
    groups.append(np.arange(start, num_limbs))
    ia, ib, score, limb_of = (np.concatenate(parts) for parts in zip(*(score_limbs(g) for g in groups)))
    return Candidates(ia, ib, score, np.searchsorted(limb_of, np.arange(num_limbs + 1)))


class _PafField:
    """The PAF stack flattened for gathers, read at points (nearest or bilinear), and a bound on
    the length of the vector any sample in a pixel (a 2x2 cell) can read there."""

    def __init__(self, pafs: np.ndarray, bilinear: bool, peak_x: np.ndarray, peak_y: np.ndarray):
        channels, self.height, self.width = pafs.shape
        height, width = self.height, self.width
        self.bilinear, self.num_limbs = bilinear, channels // 2
        if pafs.transpose(1, 2, 0).flags.c_contiguous:
            # (H, W, 2L) in memory, as cv2.resize returns maps: used as is, and a sample's x and
            # y components share a cache line.
            self.flat, self.pixel_step, self.channel_step = pafs.transpose(1, 2, 0).reshape(-1), channels, 1
        else:
            self.flat, self.pixel_step, self.channel_step = np.ascontiguousarray(pafs).reshape(-1), 1, height * width
        # A bilinear vector is no longer than its longest corner: where the bound is below the
        # threshold the sample misses, whatever the pair's direction (one gather, not eight).
        squares = np.square(pafs)
        magnitude = np.ascontiguousarray(np.sqrt(squares[0::2] + squares[1::2]).transpose(1, 2, 0))  # (H, W, L)
        if bilinear:
            # The cell's 2x2 maximum (a 2x2 dilation anchored top-left; OpenCV ignores what lies
            # beyond the edge), indexed by the truncated point, so that the last row and column
            # hold the cell before.
            magnitude = cv2.dilate(magnitude, np.ones((2, 2), np.uint8), anchor=(0, 0)).reshape(magnitude.shape)
            magnitude[:, -1], magnitude[-1] = magnitude[:, max(width - 2, 0)], magnitude[max(height - 2, 0)]
        self.bound = magnitude.reshape(-1)
        # Samples lie between their peaks: with every peak within (-1, W) x (-1, H), truncation
        # finds the cell (it takes (-1, 0) to 0, as floor then clipping does; sub-pixel peaks at
        # the edges lie up to half a px beyond the first and last px).
        self.on_map = len(peak_x) == 0 or bool(
            peak_x.min() > -1 and peak_y.min() > -1 and peak_x.max() < width and peak_y.max() < height)

    def cell(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The top-left pixel of the 2x2 cell that interpolates each point (the last cell at the
        far edges). Truncation then clipping equals floor then clipping."""
        if self.on_map:  # no point at or below -1: only the far edges need clipping
            return np.minimum(xs.astype(np.intp), max(self.width - 2, 0)), np.minimum(ys.astype(np.intp),
                                                                                  max(self.height - 2, 0))
        return (np.clip(xs.astype(np.intp), 0, max(self.width - 2, 0)),
                np.clip(ys.astype(np.intp), 0, max(self.height - 2, 0)))

    def at(self, limb: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Limb `limb`'s PAF vector (x, y components, float64) at points xs, ys (map px)."""
        flat, width, pixel_step = self.flat, self.width, self.pixel_step
        channel = 2 * limb * self.channel_step
        if not self.bilinear:
            at = channel + (np.rint(ys).astype(np.intp) * width + np.rint(xs).astype(np.intp)) * pixel_step
            return flat[at], flat[at + self.channel_step]
        x0, y0 = self.cell(xs, ys)
        fx, fy = xs - x0, ys - y0
        step_x = pixel_step if width > 1 else 0
        step_y = width * pixel_step if self.height > 1 else 0
        gx, gy = 1.0 - fx, 1.0 - fy
        at = channel + (y0 * width + x0) * pixel_step
        out = []
        for c in (at, at + self.channel_step):
            top = flat[c] * gx + flat[c + step_x] * fx
            bottom = flat[c + step_y] * gx + flat[c + step_y + step_x] * fx
            out.append(top * gy + bottom * fy)
        return out[0], out[1]

    def sure_misses(self, limb: np.ndarray, xs: np.ndarray, ys: np.ndarray, threshold: float) -> np.ndarray:
        """(pairs,) how many of the samples (rows of xs, ys) certainly fail the threshold."""
        if not self.bilinear:
            cell_x, cell_y = np.rint(xs).astype(np.intp), np.rint(ys).astype(np.intp)
        elif self.on_map:
            cell_x, cell_y = xs.astype(np.intp), ys.astype(np.intp)
        else:
            cell_x, cell_y = self.cell(xs, ys)
        bound = self.bound[(cell_y * self.width + cell_x) * self.num_limbs + limb]
        return (bound < threshold - 1e-5 * (1.0 + abs(threshold))).sum(axis=0)  # a margin for rounding


def _match_greedy(candidates: Iterable[tuple[int, int, float]], max_matches: int) -> list[tuple[int, int, float]]:
    """One-to-one matching: walk the (ia, ib, score) candidates best first, keep a pair when both
    peaks are free."""
    used_a: set[int] = set()
    used_b: set[int] = set()
    matches = []
    for i, j, s in candidates:
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
    peaks: Sequence[np.ndarray], joints: list[list[int]], totals: list[float], counts: list[int], min_parts: int,
    min_score: float
) -> People:
    num_joints = len(peaks)
    keep = [p for p in range(len(joints)) if counts[p] >= min_parts and totals[p] / counts[p] >= min_score]
    # One gather from all peaks, a missing joint (-1) reading the zero row appended last.
    table = np.array([joints[p] for p in keep], np.int64).reshape(len(keep), num_joints)
    first = np.cumsum([0] + [len(p) for p in peaks[:-1]])
    rows = np.concatenate([np.asarray(p, np.float32).reshape(-1, 3) for p in peaks] + [np.zeros((1, 3), np.float32)])
    keypoints = rows[np.where(table >= 0, first + table, len(rows) - 1)]
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
    interpolation: str = "nearest",
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
        interpolation: how PAF samples are read: "nearest" pixel (OpenPose's, on maps upsampled
            x8) or "bilinear" (maps at the network's resolution, sub-pixel peaks).

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
    candidates = score_limb_candidates(peaks, pafs, limbs, paf_threshold, num_samples, count_threshold, interpolation)
    # Python numbers from here on: the loops below read them one at a time.
    peak_scores = [np.asarray(p, np.float32).reshape(-1, 3)[:, 2].tolist() for p in peaks]
    rows = list(zip(candidates.ia.tolist(), candidates.ib.tolist(), candidates.score.tolist()))
    bounds = candidates.bounds.tolist()
    for limb, (a, b) in enumerate(limbs):
        cand_a, cand_b = peak_scores[a], peak_scores[b]
        matches = _match_greedy(rows[bounds[limb]:bounds[limb + 1]], min(len(cand_a), len(cand_b)))
        for i, j, s in matches:
            pa, pb = owner[a][i], owner[b][j]
            if pa < 0 and pb < 0:
                row = [-1] * num_joints
                row[a], row[b] = i, j
                owner[a][i] = owner[b][j] = len(joints)
                joints.append(row)
                totals.append((cand_a[i] + cand_b[j]) + s)
                counts.append(2)
                alive.append(True)
            elif pa < 0 or pb < 0:  # one end belongs to a person: the other end joins them
                person, k, peak, cand = (pb, a, i, cand_a) if pa < 0 else (pa, b, j, cand_b)
                if joints[person][k] < 0:
                    joints[person][k] = peak
                    owner[k][peak] = person
                    totals[person] += cand[peak] + s
                    counts[person] += 1
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


def find_people(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    limbs: Sequence[tuple[int, int]],
    heatmap_threshold: float,
    paf_threshold: float,
    sigma_smooth: float,
    min_parts: int = 4,
    min_score: float = 0.4,
) -> People:
    """People from maps at the network's own resolution (stride 8), the default inference path.

    Nothing is upsampled (OpenPose upsamples all channels x8, which costs more than the rest of
    grouping). Peaks are maxima over their 4 neighbours (OpenPose's rule; with 3x3 maxima, the same
    joint of two people 10 input px apart would merge at this resolution), refined to sub-pixel
    by `refine_peaks`; limbs are scored on bilinear samples of the PAFs. On crowds this finds more
    people and joints than OpenPose's decode, with smaller joint errors (bench/bench_grouping.py).
    Candidates are the maxima above half the threshold; refinement keeps those above it (a joint
    between grid points samples lower than its peak).

    Args:
        heatmaps: (K, h, w) float32 joint channels; pafs: (2L, h, w). Channels-last views work.
        sigma_smooth: in map px (OpenPose's 3 input px / the stride).
        Others: as `group_people`.

    Returns:
        People in map px (sub-pixel).
    """
    candidates = find_peaks(heatmaps, 0.5 * heatmap_threshold, sigma_smooth, cross=True)
    peaks = refine_peaks(heatmaps, candidates, heatmap_threshold, sigma_smooth)
    return group_people(peaks, pafs, limbs, paf_threshold, min_parts=min_parts, min_score=min_score,
                        interpolation="bilinear")
