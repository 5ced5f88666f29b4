"""COCO keypoint evaluation (evaluate.py): OKS-NMS, results assembly, metrics, per-joint errors, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pose_workloads.data.topdown import CropMeta
from pose_workloads.errors import BadInput
from pose_workloads.evaluate import (
    METRIC_NAMES,
    coco_keypoint_metrics,
    format_metrics_table,
    oks_matrix,
    oks_nms,
    per_joint_mean_error,
    topdown_results,
    write_evaluation,
)
from pose_workloads.specs import COCO17

SIGMAS = COCO17.sigmas


def gt_people(coco_mini) -> list[dict]:
    data = json.loads(coco_mini.keypoints.read_text())
    return [a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]


def perturbed_results(coco_mini, seed: int, noise: float = 0.08) -> list[dict]:
    """Ground truth moved by noise x sqrt(area), some people missed, some false poses added."""
    rng = np.random.default_rng(seed)
    data = json.loads(coco_mini.keypoints.read_text())
    results = []
    for ann in gt_people(coco_mini):
        if rng.random() < 0.15:
            continue
        kps = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        kps[:, :2] += rng.normal(0, noise * np.sqrt(ann["area"]), (17, 2))
        kps[:, 2] = rng.random(17)
        results.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": kps.ravel().tolist(),
                        "score": float(rng.random())})
    for img in rng.choice(data["images"], 3):
        kps = np.c_[rng.uniform(0, img["width"], 17), rng.uniform(0, img["height"], 17), rng.random(17)]
        results.append({"image_id": img["id"], "category_id": 1, "keypoints": kps.ravel().tolist(),
                        "score": float(rng.random())})
    return results


def exact_results(coco_mini) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0, "ann_id": a["id"]}
        for a in gt_people(coco_mini)
    ]


def test_oks_matrix_is_cocos_formula():
    gt = np.array([[[10.0, 10.0], [20.0, 20.0]]])
    pred = np.array([[[13.0, 14.0], [20.0, 20.0]], [[10.0, 10.0], [20.0, 20.0]]])
    sigmas = [0.1, 0.2]
    area = 400.0
    expected = (np.exp(-25 / (0.2**2) / area / 2) + 1.0) / 2
    np.testing.assert_allclose(oks_matrix(gt, pred, area, sigmas), [[expected, 1.0]])
    only_second = oks_matrix(gt, pred, area, sigmas, visible_a=np.array([[False, True]]))
    np.testing.assert_allclose(only_second, [[1.0, 1.0]])


def test_oks_nms_drops_duplicates_and_keeps_distinct_people():
    rng = np.random.default_rng(0)
    person_a = rng.uniform(0, 100, (17, 2))
    person_b = person_a + 300
    keypoints = np.stack([person_a, person_a + 0.5, person_b, person_a + 1.0])
    scores = np.array([0.8, 0.9, 0.7, 0.95])
    keep = oks_nms(keypoints, scores, np.full(4, 100.0 * 100.0), SIGMAS, threshold=0.9)
    assert keep.tolist() == [3, 2]  # best of the three near-copies, then the other person
    assert oks_nms(np.zeros((0, 17, 2)), np.zeros(0), np.zeros(0), SIGMAS).tolist() == []


def test_topdown_results_rescore_by_confident_joints_and_nms_per_image():
    coords = np.zeros((3, 17, 2))
    coords[0] = np.random.default_rng(1).uniform(0, 100, (17, 2))
    coords[1] = coords[0] + 0.1  # duplicate of 0 on the same image
    coords[2] = coords[0]  # same pose, other image: not suppressed
    maxvals = np.full((3, 17), 0.1)
    maxvals[:, :4] = [0.9, 0.5, 0.3, 0.25]  # only these pass the 0.2 threshold
    metas = CropMeta(
        image_id=np.array([5, 5, 6]), ann_id=np.array([-1, -1, 42]), score=np.array([0.5, 0.4, 1.0]),
        center=np.zeros((3, 2)), scale=np.full((3, 2), 100.0), rotation_deg=np.zeros(3), flipped=np.zeros(3, bool),
    )
    results = topdown_results(coords, maxvals, metas, SIGMAS)
    assert [(r["image_id"], r.get("ann_id")) for r in results] == [(5, None), (6, 42)]
    assert results[0]["score"] == pytest.approx(0.5 * np.mean([0.9, 0.5, 0.3, 0.25]))
    assert len(results[0]["keypoints"]) == 51
    assert results[0]["keypoints"][2] == pytest.approx(0.9)  # the third value is the joint score


def test_empty_results_give_zero_metrics_not_a_crash(coco_mini):
    for backend in ("faster", "pycocotools"):
        metrics = coco_keypoint_metrics(coco_mini.keypoints, [], SIGMAS, backend)
        assert metrics == {name: 0.0 for name in METRIC_NAMES}


def test_metric_names_are_the_coco_ten_and_exact_results_score_one(coco_mini):
    metrics = coco_keypoint_metrics(coco_mini.keypoints, exact_results(coco_mini), SIGMAS)
    assert tuple(metrics) == ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed,noise", [(0, 0.03), (1, 0.08), (2, 0.15)])
def test_faster_coco_eval_and_pycocotools_give_the_same_stats(coco_mini, seed, noise):
    # Measured: equal to the last bit or one ulp (1e-16) apart on every stat.
    results = perturbed_results(coco_mini, seed, noise)
    faster = coco_keypoint_metrics(coco_mini.keypoints, results, SIGMAS, "faster")
    reference = coco_keypoint_metrics(coco_mini.keypoints, results, SIGMAS, "pycocotools")
    assert 0.0 < reference["AP"] < 1.0
    for name in METRIC_NAMES:
        assert faster[name] == pytest.approx(reference[name], abs=1e-12), name


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_custom_oks_sigmas_are_used(coco_mini, backend):
    results = perturbed_results(coco_mini, 1, 0.08)
    tight = coco_keypoint_metrics(coco_mini.keypoints, results, SIGMAS, backend)
    loose = coco_keypoint_metrics(coco_mini.keypoints, results, [s * 4 for s in SIGMAS], backend)
    assert loose["AP"] > tight["AP"]


def test_results_on_images_the_ground_truth_lacks_are_refused(coco_mini):
    results = [{"image_id": 999, "category_id": 1, "keypoints": [0.0] * 51, "score": 1.0}]
    with pytest.raises(ValueError, match="999"):
        coco_keypoint_metrics(coco_mini.keypoints, results, SIGMAS)


def test_ground_truth_with_another_joint_count_is_bad_input_naming_the_fix(coco_mini):
    with pytest.raises(BadInput, match=r"person_keypoints_mini\.json.*17 joints.*14 OKS sigmas.*pose config"):
        coco_keypoint_metrics(coco_mini.keypoints, exact_results(coco_mini), SIGMAS[:14])


def test_missing_ground_truth_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="nothere.json: file not found"):
        coco_keypoint_metrics(tmp_path / "nothere.json", [], SIGMAS)


def test_per_joint_error_matches_by_ann_id_with_gt_boxes(coco_mini):
    results = exact_results(coco_mini)
    shifted = np.array(results[0]["keypoints"], dtype=np.float64).reshape(17, 3)
    shifted[:, 0] += 3.0  # one person 3 px off: the other 11 are exact
    results[0]["keypoints"] = shifted.ravel().tolist()
    errors = per_joint_mean_error(results, coco_mini.keypoints, SIGMAS)
    labelled = np.array([np.array(a["keypoints"]).reshape(17, 3)[:, 2] > 0 for a in gt_people(coco_mini)])
    expected = np.where(labelled[0], 3.0, 0.0) / labelled.sum(axis=0)
    np.testing.assert_allclose(errors, expected)


def test_per_joint_error_matches_detections_greedily_by_oks(coco_mini):
    results = exact_results(coco_mini)
    for r in results:
        del r["ann_id"]
        kps = np.array(r["keypoints"], dtype=np.float64).reshape(17, 3)
        kps[:, 1] += 1.0
        r["keypoints"] = kps.ravel().tolist()
    results.append({"image_id": 785, "category_id": 1, "keypoints": [5000.0] * 51, "score": 0.99})  # matches no one
    errors = per_joint_mean_error(results, coco_mini.keypoints, SIGMAS)
    np.testing.assert_allclose(errors, 1.0)


def test_write_evaluation_writes_both_files_atomically_with_nan_as_null(coco_mini, tmp_path):
    metrics = {**{name: 0.5 for name in METRIC_NAMES},
               "per_joint_error_px": {"nose": float("nan"), "left_eye": np.float32(2.5)}}
    results_path, metrics_path = write_evaluation(tmp_path / "out", exact_results(coco_mini), metrics)
    assert json.loads(results_path.read_text()) == exact_results(coco_mini)
    written = json.loads(metrics_path.read_text())
    assert written["per_joint_error_px"] == {"nose": None, "left_eye": 2.5}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keypoints_results.json", "metrics.json"]
    # A failed write leaves the previous file whole and no temporary behind.
    with pytest.raises(TypeError):
        write_evaluation(tmp_path / "out", [{"unserialisable": object()}], metrics)
    assert json.loads(results_path.read_text()) == exact_results(coco_mini)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keypoints_results.json", "metrics.json"]


def test_metrics_table_lists_metrics_and_joint_errors():
    metrics = {**{name: 0.25 for name in METRIC_NAMES}, "per_joint_error_px": {"nose": 1.234, "left_eye": None}}
    table = format_metrics_table(metrics)
    for name in METRIC_NAMES:
        assert f"  {name} " in table
    assert "0.2500" in table and "nose" in table and "1.23" in table
    assert table.splitlines()[-1].split() == ["left_eye", "-"]
