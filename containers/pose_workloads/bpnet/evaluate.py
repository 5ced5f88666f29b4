"""`bpnet evaluate --inference_spec S --model_filename M --dataset_spec D --results_dir R`: COCO
OKS AP of a model file (.pth / .onnx / .engine) on the dataset spec's test split, run through
the pipeline inference uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pose_workloads.bad_data import Skips
from pose_workloads.bpnet.pipeline import annotation_joint_index, coco_results, describe, predict_people, prepare
from pose_workloads.specs import BpnetDatasetSpec, load_pose_config, load_spec


class Evaluation(NamedTuple):
    results: list[dict]  # COCO keypoint results
    metrics: dict[str, Any]  # METRIC_NAMES + per_joint_error_px + skipped (bad_data.py)
    images: int
    network_ms: float  # summed over the images
    grouping_ms: float


def evaluate_predictor(predictor, settings, dataset_spec: BpnetDatasetSpec, model_path: Path, backend: str = "faster",
                       label: str = "evaluating") -> Evaluation:
    """COCO OKS AP of a predictor on the dataset spec's test split, through the inference pipeline
    (evaluate, and export's accuracy gate)."""
    from pose_workloads.data.coco import load_coco
    from pose_workloads.evaluate import coco_keypoint_metrics, per_joint_mean_error
    from pose_workloads.media import BadSample, read_image
    from pose_workloads.progress import track

    pose_config = predictor.info.pose_config
    annotation_config = load_pose_config(dataset_spec.pose_config_path)
    to_annotation = annotation_joint_index(pose_config, annotation_config, model_path)
    split = dataset_spec.test_data
    annotations = dataset_spec.resolve(split.annotation_root_dir_path)
    data = load_coco(dataset_spec.resolve(split.images_root_dir_path), annotations, annotation_config)
    results: list[dict] = []
    network_ms = grouping_ms = 0.0
    skips = Skips()
    skips.update(data.skipped)  # bad annotations, as training skips them
    for record in track(data.images, len(data.images), label):
        try:
            image = read_image(record.image_path, (record.height, record.width))
        except BadSample as err:  # skipped and counted (bad_data.py); its people count as missed
            skips.add(err.reason, Path(err.path).name)
            continue
        prediction = predict_people(predictor, image, settings, pose_config)
        results += coco_results(prediction, record.image_id, to_annotation)
        network_ms += prediction.timings_ms["network"]
        grouping_ms += prediction.timings_ms["grouping"]
    sigmas = annotation_config.oks_sigmas
    metrics: dict[str, Any] = coco_keypoint_metrics(annotations, results, sigmas, backend)
    errors = per_joint_mean_error(results, annotations, sigmas) if results else np.full(len(sigmas), np.nan)
    metrics["per_joint_error_px"] = {name: float(e) for name, e in zip(annotation_config.keypoints, errors)}
    metrics["skipped"] = skips.as_dict()
    skips.report("images and annotations", len(data.images))
    return Evaluation(results, metrics, len(data.images), network_ms, grouping_ms)


def main(args) -> int:
    """`bpnet evaluate --inference_spec S --model_filename M --dataset_spec D --results_dir R`:
    COCO OKS AP on the dataset spec's test split; writes R/keypoints_results.json, R/metrics.json."""
    from pose_workloads.evaluate import format_metrics_table, write_evaluation

    dataset_spec = load_spec(BpnetDatasetSpec, args.dataset_spec)
    spec, model_path, opened, settings = prepare(args)
    annotations = dataset_spec.resolve(dataset_spec.test_data.annotation_root_dir_path)
    print(f"evaluating {describe(model_path, opened, settings)} on the test split of {annotations}", flush=True)
    run = evaluate_predictor(opened.predictor, settings, dataset_spec, model_path, spec.backend)
    write_evaluation(args.results_dir, run.results, run.metrics)
    print(format_metrics_table(run.metrics))
    count = max(run.images, 1)
    print(f"{len(run.results)} people in {run.images} images; per image: network {run.network_ms / count:.1f} ms, "
          f"grouping {run.grouping_ms / count:.1f} ms")
    print(f"wrote {Path(args.results_dir) / 'metrics.json'} and {Path(args.results_dir) / 'keypoints_results.json'}")
    return 0
