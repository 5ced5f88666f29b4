"""COCO keypoint evaluation: top-down predictions -> COCO results -> OKS AP, per-joint errors, files.

The AP itself is the field's: pycocotools' `COCOeval(iouType="keypoints")`, or faster-coco-eval's
C++ port of it (same numbers, several times faster: bench/bench_cocoeval.py). Custom joint sets get
their own OKS sigmas (`params.kpt_oks_sigmas`). What is ours: assembling results from heatmap
decodes as Simple Baselines does (rescoring, OKS-NMS), per-joint pixel errors, and writing it all.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pose_workloads.data.coco import read_coco_json
from pose_workloads.errors import BadInput
from pose_workloads.files import write_atomic

METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
BACKENDS = ("faster", "pycocotools")
RESULTS_FILE = "keypoints_results.json"
METRICS_FILE = "metrics.json"


# ------------------------------------------------------------------------------------------------
# OKS and OKS-NMS
# ------------------------------------------------------------------------------------------------

def oks_matrix(
    keypoints_a: np.ndarray,
    keypoints_b: np.ndarray,
    areas: np.ndarray,
    sigmas: Sequence[float],
    visible_a: np.ndarray | None = None,
) -> np.ndarray:
    """Object keypoint similarity of every pair (COCO's formula), vectorised.

    Args:
        keypoints_a: (P, K, >=2) float image px. keypoints_b: (Q, K, >=2) float image px.
        areas: (P, Q) or broadcastable: the object scale s^2 (px^2) of each pair.
        sigmas: (K,) COCO per-joint constants.
        visible_a: (P, K) bool, joints of `a` that count (COCO: labelled ground-truth joints);
            None = all. A row of `a` with no counted joint gets OKS 0.
    Returns:
        (P, Q) float64 in [0, 1].
    """
    a = np.asarray(keypoints_a, dtype=np.float64)[..., :2]
    b = np.asarray(keypoints_b, dtype=np.float64)[..., :2]
    variances = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = ((a[:, None] - b[None, :]) ** 2).sum(axis=-1)  # (P, Q, K)
    e = d2 / variances / (np.asarray(areas, dtype=np.float64)[..., None] + np.spacing(1)) / 2
    if visible_a is None:
        return np.exp(-e).mean(axis=-1)
    counted = np.asarray(visible_a, dtype=bool)[:, None, :]
    n = counted.sum(axis=-1)
    return np.where(n > 0, (np.exp(-e) * counted).sum(axis=-1) / np.maximum(n, 1), 0.0)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    sigmas: Sequence[float],
    threshold: float = 0.9,
) -> np.ndarray:
    """Greedy non-maximum suppression of one image's poses by OKS (Simple Baselines' `oks_nms`).

    Duplicate boxes from the detector give near-identical poses; the best-scoring one is kept and
    every pose with OKS > threshold to it is dropped. As in Simple Baselines the scale of a pair
    is the mean of the two box areas and all joints count.

    Args:
        keypoints: (P, K, >=2) image px. scores: (P,). areas: (P,) px^2 (crop box areas).
    Returns:
        (M,) int64 indices of the kept poses, best score first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    areas = np.asarray(areas, dtype=np.float64)
    pair_areas = (areas[:, None] + areas[None, :]) / 2
    similarity = oks_matrix(keypoints, keypoints, pair_areas, sigmas)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= similarity[i] > threshold
    return np.asarray(keep, dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# Predictions -> COCO results
# ------------------------------------------------------------------------------------------------

def topdown_results(
    coords_img: np.ndarray,
    maxvals: np.ndarray,
    metas: Any,
    sigmas: Sequence[float],
    joint_score_threshold: float = 0.2,
    oks_nms_threshold: float = 0.9,
    category_id: int = 1,
) -> list[dict]:
    """COCO keypoint results from decoded crops, rescored and OKS-NMSed per image (Simple Baselines).

    A pose's score is its box score times the mean confidence of its joints above
    `joint_score_threshold` (0 when none is). Ground-truth boxes (ann_id >= 0) keep their
    annotation id in the result as "ann_id", which `per_joint_mean_error` matches on.

    Args:
        coords_img: (N, K, 2) float image px (`decode.heatmap_to_image_coords`).
        maxvals: (N, K) float joint confidences.
        metas: a `data.topdown.CropMeta` whose fields hold N values each (`concat_metas`);
            image_id, ann_id, score (box score) and scale (crop w, h: its area scales OKS-NMS).
    Returns:
        [{"image_id", "category_id", "keypoints": [x, y, score] * K, "score", ("ann_id")}], sorted
        by image id then descending score.
    """
    coords_img = np.asarray(coords_img, dtype=np.float64)
    maxvals = np.asarray(maxvals, dtype=np.float64)
    image_ids = np.asarray(metas.image_id).astype(np.int64).reshape(-1)
    ann_ids = np.asarray(metas.ann_id).astype(np.int64).reshape(-1)
    box_scores = np.asarray(metas.score, dtype=np.float64).reshape(-1)
    scale = np.asarray(metas.scale, dtype=np.float64).reshape(-1, 2)
    confident = maxvals > joint_score_threshold
    count = confident.sum(axis=1)
    joint_score = np.where(count > 0, (maxvals * confident).sum(axis=1) / np.maximum(count, 1), 0.0)
    scores = box_scores * joint_score
    areas = scale[:, 0] * scale[:, 1]

    results = []
    for image_id in np.unique(image_ids):
        members = np.flatnonzero(image_ids == image_id)
        kept = members[oks_nms(coords_img[members], scores[members], areas[members], sigmas, oks_nms_threshold)]
        for i in kept:
            result = {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "keypoints": np.concatenate([coords_img[i], maxvals[i][:, None]], axis=1).reshape(-1).round(3).tolist(),
                "score": float(scores[i]),
            }
            if ann_ids[i] >= 0:
                result["ann_id"] = int(ann_ids[i])
            results.append(result)
    return results


# ------------------------------------------------------------------------------------------------
# COCO metrics
# ------------------------------------------------------------------------------------------------

def coco_keypoint_metrics(
    gt_annotations_path: str | Path,
    results: list[dict],
    sigmas: Sequence[float],
    backend: str = "faster",
) -> dict[str, float]:
    """COCO OKS AP/AR of keypoint results against a ground-truth file.

    Args:
        gt_annotations_path: COCO keypoints annotation JSON (every image in it is evaluated).
        results: COCO results dicts (image_id, category_id, keypoints, score); extra keys ignored.
        sigmas: (K,) OKS constants of the joint set (COCO's 17 or a custom set's).
        backend: "faster" (faster-coco-eval, C++) or "pycocotools" (the reference).
    Returns:
        {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}: floats in [0, 1]
        (COCO's -1 where a size range has no ground truth). No results: all 0, as COCO would give.

    Raises:
        BadInput: the file is missing or not JSON, or its keypoints do not have len(sigmas) joints.
        ValueError: results name images the ground truth does not have.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO evaluation backend {backend!r}; valid: {', '.join(BACKENDS)}")
    gt_annotations_path = Path(gt_annotations_path)
    gt = _read_gt(gt_annotations_path, len(sigmas))
    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    gt_images = {img["id"] for img in gt["images"]}
    unknown = sorted({r["image_id"] for r in results} - gt_images)
    if unknown:
        raise ValueError(
            f"{gt_annotations_path}: results for {len(unknown)} image ids it does not have "
            f"(first: {unknown[:5]}); evaluate against the annotations the boxes came from"
        )
    # Only the fields COCO reads, in fresh dicts: loadRes writes area/bbox/id into what it is given.
    results = [
        {"image_id": r["image_id"], "category_id": r["category_id"], "keypoints": list(r["keypoints"]),
         "score": r["score"]}
        for r in results
    ]
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO(gt)
        coco_eval = COCOeval_faster(coco_gt, coco_gt.loadRes(results), "keypoints", kpt_oks_sigmas=list(sigmas))
        coco_eval.print_function = lambda *args, **kwargs: None
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints every step
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "keypoints")
            coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, coco_eval.stats[: len(METRIC_NAMES)])}


def _read_gt(path: Path, num_joints: int) -> dict:
    gt = read_coco_json(path)
    labelled = [ann for ann in gt["annotations"] if isinstance(ann, dict) and ann.get("keypoints")]
    wrong = [ann for ann in labelled if len(ann["keypoints"]) != 3 * num_joints]
    if wrong and len(wrong) == len(labelled):
        ann = wrong[0]
        raise BadInput(
            f"{path}: annotations[id={ann.get('id')}].keypoints: {len(ann['keypoints']) // 3} joints, but the "
            f"pose config has {num_joints} OKS sigmas; pass the pose config these annotations use"
        )
    for ann in wrong:
        # A few damaged annotations (load_coco skips and counts them): that person is ignored, as
        # COCO ignores crowds, so neither a miss nor a false positive; the others are scored.
        ann.update(keypoints=[0] * (3 * num_joints), num_keypoints=0, ignore=1)
    return gt


# ------------------------------------------------------------------------------------------------
# Per-joint pixel error
# ------------------------------------------------------------------------------------------------

def per_joint_mean_error(
    results: list[dict],
    gt_annotations_path: str | Path,
    sigmas: Sequence[float],
    min_oks: float = 0.5,
) -> np.ndarray:
    """Mean distance (image px) from each predicted joint to its labelled ground-truth joint.

    A result carrying "ann_id" (ground-truth boxes) is compared with that annotation. Others
    (detected boxes) are matched greedily per image, best score first, to the unmatched person
    with the highest OKS, if at least `min_oks` (COCO's loosest threshold): a pose matched to the
    wrong person would report its distance to a stranger. Unmatched results do not count.

    Returns:
        (K,) float64 mean error per joint over labelled (v > 0) ground-truth joints; NaN for a
        joint never labelled in a matched pair.
    """
    num_joints = len(sigmas)
    gt = _read_gt(Path(gt_annotations_path), num_joints)
    people = {
        ann["id"]: ann for ann in gt["annotations"]
        if not ann.get("iscrowd", 0) and ann.get("num_keypoints", np.count_nonzero(ann.get("keypoints", [])[2::3])) > 0
    }
    by_image: dict[int, list[int]] = defaultdict(list)
    for ann_id, ann in people.items():
        by_image[ann["image_id"]].append(ann_id)

    pairs: list[tuple[dict, dict]] = []
    unmatched: dict[int, list[dict]] = defaultdict(list)
    for result in results:
        if result.get("ann_id") in people:
            pairs.append((result, people[result["ann_id"]]))
        else:
            unmatched[result["image_id"]].append(result)
    for image_id, image_results in unmatched.items():
        candidates = by_image.get(image_id, [])
        if not candidates:
            continue
        gt_kps = np.array([people[a]["keypoints"] for a in candidates], dtype=np.float64)
        gt_kps = gt_kps.reshape(len(candidates), num_joints, 3)
        gt_areas = np.array([people[a].get("area", 0.0) for a in candidates], dtype=np.float64)
        image_results = sorted(image_results, key=lambda r: -r["score"])
        pred_kps = np.array([r["keypoints"] for r in image_results], dtype=np.float64)
        pred_kps = pred_kps.reshape(len(image_results), num_joints, 3)
        similarity = oks_matrix(gt_kps, pred_kps, gt_areas[:, None], sigmas, visible_a=gt_kps[..., 2] > 0)  # (G, R)
        taken = np.zeros(len(candidates), dtype=bool)
        for r, result in enumerate(image_results):
            column = np.where(taken, -1.0, similarity[:, r])
            best = int(np.argmax(column))
            if column[best] >= min_oks:
                taken[best] = True
                pairs.append((result, people[candidates[best]]))

    total = np.zeros(num_joints)
    count = np.zeros(num_joints)
    for result, ann in pairs:
        pred = np.asarray(result["keypoints"], dtype=np.float64).reshape(num_joints, 3)
        truth = np.asarray(ann["keypoints"], dtype=np.float64).reshape(num_joints, 3)
        labelled = truth[:, 2] > 0
        distance = np.linalg.norm(pred[:, :2] - truth[:, :2], axis=1)
        total += np.where(labelled, distance, 0.0)
        count += labelled
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------

def write_evaluation(results_dir: str | Path, results: list[dict], metrics: dict[str, Any]) -> tuple[Path, Path]:
    """Write RESULTS/keypoints_results.json and RESULTS/metrics.json, each atomically.

    NaN (a joint never labelled) is written as null, so the files stay standard JSON.
    Returns the two paths.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    results_path = results_dir / RESULTS_FILE
    metrics_path = results_dir / METRICS_FILE
    _write_json_atomic(results_path, results)
    _write_json_atomic(metrics_path, _json_safe(metrics))
    return results_path, metrics_path


def _write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, allow_nan=False))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """The evaluation summary as printed: COCO metrics, then mean error per joint if present.

    `metrics` holds METRIC_NAMES and optionally "per_joint_error_px": {joint name: px or NaN/None}.
    """
    lines = ["COCO keypoint metrics (OKS)", f"  {'metric':<8} {'value':>7}"]
    lines += [f"  {name:<8} {metrics[name]:>7.4f}" for name in METRIC_NAMES if name in metrics]
    errors = metrics.get("per_joint_error_px")
    if errors:
        width = max(len("joint"), *(len(name) for name in errors))
        lines += ["", "Mean joint error (image px, labelled joints of matched people)",
                  f"  {'joint':<{width}} {'px':>7}"]
        for name, value in errors.items():
            text = "-" if value is None or not math.isfinite(value) else f"{value:.2f}"
            lines.append(f"  {name:<{width}} {text:>7}")
    return "\n".join(lines)
