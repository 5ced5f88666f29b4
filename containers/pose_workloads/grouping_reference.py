"""`grouping.group_people` written as plain loops: the correctness oracle of the tests.

Not used by inference and not a speed baseline (bench/bench_grouping.py times the peers'
algorithm, written there); it keeps the straightforward reading of OpenPose's grouping that the
vectorised code must reproduce bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pose_workloads.grouping import People, _check_inputs, _to_people


def _bilinear(channel: np.ndarray, x: float, y: float) -> float:
    """`channel` (H, W) at (x, y), bilinear, in `score_limb_candidates`' arithmetic."""
    height, width = channel.shape
    x0 = int(min(max(math.floor(x), 0), max(width - 2, 0)))
    y0 = int(min(max(math.floor(y), 0), max(height - 2, 0)))
    x1, y1 = min(x0 + 1, width - 1), min(y0 + 1, height - 1)
    fx, fy = x - x0, y - y0
    top = float(channel[y0, x0]) * (1.0 - fx) + float(channel[y0, x1]) * fx
    bottom = float(channel[y1, x0]) * (1.0 - fx) + float(channel[y1, x1]) * fx
    return top * (1.0 - fy) + bottom * fy


def reference_group_people(
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
    """`group_people` written as plain loops (pytorch-openpose's body.py structure): one pair and
    one sample at a time, and every connection scans the people found so far. Same arguments and
    identical results; kept for tests and the benchmark, not for use."""
    pafs = np.asarray(pafs, dtype=np.float32)
    _check_inputs(peaks, pafs, limbs)
    num_joints = len(peaks)
    map_height, map_width = pafs.shape[1:]
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
                    x, y = ax + dx * t[s], ay + dy * t[s]
                    if interpolation == "bilinear":
                        vx, vy = _bilinear(paf_x, x, y), _bilinear(paf_y, x, y)
                    else:
                        row, col = int(np.rint(y)), int(np.rint(x))
                        vx, vy = float(paf_x[row, col]), float(paf_y[row, col])
                    proj = vx * ux + vy * uy
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
    return _to_people(peaks, [r[:num_joints] for r in subset], [r[-2] for r in subset], [r[-1] for r in subset],
                      min_parts, min_score)
