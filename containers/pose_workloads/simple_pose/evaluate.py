"""`simple-pose evaluate -e SPEC -m MODEL -r RESULTS`: COCO OKS AP and per-joint error of a model
file (.pth / .onnx / .engine) on the spec's val set, ground-truth or detected boxes."""

from __future__ import annotations

from pathlib import Path

from pose_workloads.errors import BadInput
from pose_workloads.simple_pose.pipeline import coco_evaluation, eval_dataset, eval_settings, open_model
from pose_workloads.specs import SimplePoseSpec, load_pose_config, load_spec


def main(args) -> int:
    """`simple-pose evaluate -e SPEC -m MODEL -r RESULTS`: COCO OKS AP on the spec's val set."""
    from pose_workloads.evaluate import format_metrics_table, write_evaluation

    spec = load_spec(SimplePoseSpec, args.spec, args.overrides)
    predictor = open_model(args.model)
    pose_config = predictor.info.pose_config
    data_config = load_pose_config(spec.data.pose_config)
    if data_config.num_joints != pose_config.num_joints:
        raise BadInput(
            f"{args.spec}: data.pose_config: names {data_config.num_joints} joints but {args.model} predicts "
            f"{pose_config.num_joints}; evaluate with the pose config the model was trained on"
        )
    input_size = tuple(predictor.info.input_size)
    dataset = eval_dataset(spec, pose_config, input_size)
    settings = eval_settings(spec)
    print(f"evaluating {args.model} ({predictor.backend}) on {len(dataset)} "
          f"{'detected' if spec.data.val_detections else 'ground-truth'} boxes, flip test "
          f"{'on' if settings.flip_test else 'off'}, {settings.decoder} decoder", flush=True)
    results, metrics = coco_evaluation(lambda x: predictor(x)[0], dataset, pose_config, spec.data.val_annotations,
                                       settings)
    write_evaluation(args.results_dir, results, metrics)
    print(format_metrics_table(metrics))
    print(f"wrote {Path(args.results_dir) / 'metrics.json'} and {Path(args.results_dir) / 'keypoints_results.json'}")
    return 0
