"""`bpnet evaluate --inference_spec S --model_filename M --dataset_spec D --results_dir R`: COCO
OKS AP of a model file (.pth / .onnx / .engine) on the dataset spec's test split, run through
the pipeline inference uses."""

from __future__ import annotations

from pathlib import Path

from pose_workloads.bpnet.pipeline import describe, evaluate_predictor, prepare
from pose_workloads.specs import BpnetDatasetSpec, load_spec


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
