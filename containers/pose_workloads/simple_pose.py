"""Simple Pose (top-down): `train`, `evaluate` and `inference`, the actions behind
`python -m pose_workloads simple-pose <action>` (flags in __main__.py).

train: spec -> COCO people -> TopDownDataset -> model -> weighted MSE -> the shared loop in
train.py, evaluating val AP between epochs with the same pipeline as `evaluate`.
evaluate: model file (.pth / .onnx / .engine) + val set -> crops (ground-truth or detected boxes)
-> heatmaps (flip test) -> joints (argmax or DARK) -> OKS-NMS -> COCO AP and per-joint error.
inference: model file + images / a video (+ optional boxes) -> drawn skeletons + COCO results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pose_workloads.errors import BadInput
from pose_workloads.specs import PoseConfig, SimplePoseSpec, load_pose_config, load_spec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
NETWORK = "simple-pose"

# A function from a batch of crops (N, 3, H, W) float32, normalised as in training, to their
# heatmaps (N, K, H/4, W/4) float32: a torch model during training, runtime.Predictor otherwise.
HeatmapFn = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------------------------
# Loss and training metric
# ------------------------------------------------------------------------------------------------

def heatmap_loss(outputs, batch):
    """Simple Baselines' JointsMSELoss: 0.5 x mean squared error, joints without a label weighted 0.

    outputs: (N, K, h, w) heatmaps; batch["target"] (N, K, h, w), batch["target_weight"] (N, K, 1).
    """
    weight = batch["target_weight"][..., None]  # (N, K, 1, 1)
    loss = 0.5 * ((outputs.float() - batch["target"]) ** 2 * weight).mean()
    return loss, {"heatmap": loss.detach()}


def heatmap_accuracy(predicted: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> float:
    """GluonCV's HeatmapAccuracy (Simple Baselines' `accuracy`): PCK on heatmap peaks.

    Args:
        predicted, target: (N, K, h, w) float32 heatmaps.
        threshold: a joint is correct when its peaks are closer than threshold x (h/10, w/10)
            (normalised per axis, as the original).
    Returns:
        Mean over joints (that have a target in some crop) of the fraction of correct crops; NaN
        when no joint has a target.
    """
    from pose_workloads.decode import argmax_coords

    n, k, h, w = target.shape
    pred_xy, _ = argmax_coords(np.asarray(predicted, dtype=np.float32))
    true_xy, true_max = argmax_coords(np.asarray(target, dtype=np.float32))
    norm = np.array([w / 10.0, h / 10.0], dtype=np.float32)
    distance = np.linalg.norm((pred_xy - true_xy) / norm, axis=-1)  # (N, K)
    labelled = true_max > 0
    counts = labelled.sum(axis=0)
    correct = ((distance < threshold) & labelled).sum(axis=0)
    per_joint = correct[counts > 0] / counts[counts > 0]
    return float(per_joint.mean()) if per_joint.size else float("nan")


def _batch_accuracy(outputs, batch) -> dict[str, float]:
    accuracy = heatmap_accuracy(outputs.float().cpu().numpy(), batch["target"].cpu().numpy())
    return {} if np.isnan(accuracy) else {"heatmap_accuracy": accuracy}


# ------------------------------------------------------------------------------------------------
# The evaluation pipeline (shared by training's val AP and `evaluate`)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalSettings:
    flip_test: bool = True
    decoder: str = "argmax"
    sigma: float = 2.0
    joint_score_threshold: float = 0.2
    oks_nms_threshold: float = 0.9
    batch_size: int = 32
    workers: int = 0
    backend: str = "faster"


def eval_settings(spec: SimplePoseSpec) -> EvalSettings:
    e = spec.evaluate
    return EvalSettings(e.flip_test, e.decoder, spec.train.sigma, e.joint_score_threshold, e.oks_nms_threshold,
                        e.batch_size, spec.data.workers, e.backend)


def predict_heatmaps(heatmap_fn: HeatmapFn, images: np.ndarray, flip_pairs, flip_test: bool) -> np.ndarray:
    """(N, 3, H, W) crops -> (N, K, h, w) heatmaps, averaged with the mirrored crops' when `flip_test`."""
    from pose_workloads.decode import flip_back

    heatmaps = heatmap_fn(images)
    if flip_test:
        mirrored = heatmap_fn(np.ascontiguousarray(images[..., ::-1]))
        heatmaps = 0.5 * (heatmaps + flip_back(mirrored, flip_pairs))
    return heatmaps


def predict_dataset(heatmap_fn: HeatmapFn, dataset, pose_config: PoseConfig, settings: EvalSettings):
    """Every crop of a TopDownDataset (train=False) -> joints in image px.

    Returns:
        coords: (N, K, 2) float32 image px; maxvals: (N, K) float32; metas: one CropMeta of arrays.
    """
    import torch

    from pose_workloads.data.topdown import concat_metas
    from pose_workloads.decode import decode_heatmaps, heatmap_to_image_coords

    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=False,
                                         num_workers=settings.workers)
    coords, maxvals, metas = [], [], []
    for batch in loader:
        heatmaps = predict_heatmaps(heatmap_fn, batch["image"].numpy(), pose_config.flip_pairs, settings.flip_test)
        joints_hm, confidence = decode_heatmaps(heatmaps, settings.decoder, settings.sigma)
        meta = batch["meta"]
        coords.append(heatmap_to_image_coords(joints_hm, meta.center.numpy(), meta.scale.numpy(), heatmaps.shape[-2:]))
        maxvals.append(confidence)
        metas.append(meta)
    if not coords:
        k = pose_config.num_joints
        return np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32), None
    return np.concatenate(coords), np.concatenate(maxvals), concat_metas(metas)


def eval_dataset(spec: SimplePoseSpec, pose_config: PoseConfig, input_size: tuple[int, int]):
    """The val crops: ground-truth person boxes, or `data.val_detections` above the threshold."""
    from pose_workloads.data.coco import load_coco
    from pose_workloads.data.topdown import TopDownDataset, people_from_detections

    val = load_coco(spec.data.val_images, spec.data.val_annotations, pose_config)
    if spec.data.val_detections is None:
        return TopDownDataset(val.people, pose_config, input_size, sigma=spec.train.sigma, train=False)
    detections = people_from_detections(
        spec.data.val_detections, val.images, pose_config.num_joints, spec.data.detection_score_threshold
    )
    return TopDownDataset(detections.people, pose_config, input_size, sigma=spec.train.sigma, train=False,
                          box_scores=detections.scores)


def coco_evaluation(heatmap_fn: HeatmapFn, dataset, pose_config: PoseConfig, annotations: str | Path,
                    settings: EvalSettings) -> tuple[list[dict], dict[str, Any]]:
    """Predict every val crop, OKS-NMS, COCO AP/AR and mean error per joint.

    Returns (COCO results list, metrics dict: METRIC_NAMES + "per_joint_error_px" {joint: px}).
    """
    from pose_workloads.evaluate import coco_keypoint_metrics, per_joint_mean_error, topdown_results

    sigmas = pose_config.oks_sigmas
    coords, maxvals, metas = predict_dataset(heatmap_fn, dataset, pose_config, settings)
    results = [] if metas is None else topdown_results(
        coords, maxvals, metas, sigmas, settings.joint_score_threshold, settings.oks_nms_threshold
    )
    metrics: dict[str, Any] = coco_keypoint_metrics(annotations, results, sigmas, settings.backend)
    errors = per_joint_mean_error(results, annotations, sigmas) if results else np.full(len(sigmas), np.nan)
    metrics["per_joint_error_px"] = {name: float(e) for name, e in zip(pose_config.keypoints, errors)}
    return results, metrics


def torch_heatmap_fn(model, device=None) -> HeatmapFn:
    """A torch model as a HeatmapFn (no grad, on the model's device)."""
    import torch

    device = device or next(model.parameters()).device

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(images)).to(device)).float().cpu().numpy()

    return run


# ------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------

def train(args) -> int:
    """`simple-pose train -e SPEC -r RESULTS [--set k=v]`; resumes from RESULTS/checkpoint_last.pth."""
    from pose_workloads.data.coco import load_coco
    from pose_workloads.data.topdown import TopDownAugmentation, TopDownDataset
    from pose_workloads.models import build_model
    from pose_workloads.training.data import seed_everything
    from pose_workloads.training.job import Schedule, TrainJob
    from pose_workloads.training.loop import run_training

    spec = load_spec(SimplePoseSpec, args.spec, args.overrides)
    pose_config = load_pose_config(spec.data.pose_config)
    t = spec.train
    input_size = tuple(t.input_size)

    # Data first: a wrong path fails here, before a model is built.
    train_set = load_coco(spec.data.train_images, spec.data.train_annotations, pose_config)
    people = [p for p in train_set.people if p.num_keypoints >= spec.data.min_keypoints]
    if not people:
        raise BadInput(
            f"{spec.data.train_annotations}: no person has {spec.data.min_keypoints}+ labelled joints; "
            "lower data.min_keypoints or check the annotations"
        )
    dataset = TopDownDataset(people, pose_config, input_size, sigma=t.sigma, train=True,
                             aug=TopDownAugmentation(**spec.augmentation.model_dump()), seed=t.seed)
    val_dataset = eval_dataset(spec, pose_config, input_size)
    settings = eval_settings(spec)

    def evaluate_fn(model) -> dict[str, float]:
        _, metrics = coco_evaluation(torch_heatmap_fn(model), val_dataset, pose_config, spec.data.val_annotations, settings)
        return {k: v for k, v in metrics.items() if isinstance(v, float)}

    seed_everything(t.seed)
    model_config = spec.model.model_dump()
    model = build_model(NETWORK, model_config, pose_config.num_joints)
    job = TrainJob(
        network=NETWORK,
        model=model,
        model_config=model_config,
        pose_config=pose_config,
        input_size=input_size,
        train_dataset=dataset,
        loss_fn=heatmap_loss,
        results_dir=Path(args.results_dir),
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        optimizer=t.optimizer,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        schedule=Schedule(kind=t.lr_schedule, steps=tuple(t.lr_steps), factor=t.lr_factor, warmup_epochs=t.warmup_epochs),
        batch_metrics_fn=_batch_accuracy,
        evaluate_fn=evaluate_fn,
        eval_every=t.eval_every,
        checkpoint_every=t.checkpoint_every,
        workers=spec.data.workers,
        seed=t.seed,
        amp=t.amp,
        channels_last=t.channels_last,
        spec=spec,
    )
    print(f"{len(people)} training people from {len(train_set.images)} images, {len(val_dataset)} val crops", flush=True)
    result = run_training(job)
    if int(os.environ.get("RANK", "0")) == 0:
        best = result.get("best_ap")
        print(f"done: {args.results_dir}/model_final.pth" + (f", best val AP {best:.4f} (model_best.pth)" if best is not None else ""))
    return 0


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------

def _open_model(path: str | Path):
    from pose_workloads.model_file import check_network
    from pose_workloads.runtime import load_predictor

    predictor = load_predictor(path)
    check_network(path, predictor.info.network, NETWORK)
    return predictor


def evaluate(args) -> int:
    """`simple-pose evaluate -e SPEC -m MODEL -r RESULTS`: COCO OKS AP on the spec's val set."""
    from pose_workloads.evaluate import format_metrics_table, write_evaluation

    spec = load_spec(SimplePoseSpec, args.spec, args.overrides)
    predictor = _open_model(args.model)
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
    results, metrics = coco_evaluation(lambda x: predictor(x)[0], dataset, pose_config, spec.data.val_annotations, settings)
    write_evaluation(args.results_dir, results, metrics)
    print(format_metrics_table(metrics))
    print(f"wrote {Path(args.results_dir) / 'metrics.json'} and {Path(args.results_dir) / 'keypoints_results.json'}")
    return 0


# ------------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------------

def crop_boxes(image_rgb: np.ndarray, boxes_xywh: np.ndarray, input_size: tuple[int, int]):
    """Person boxes of one image -> normalised crops as in evaluation (padded box, no rotation).

    Args:
        image_rgb: (H, W, 3) uint8. boxes_xywh: (N, 4) float image px. input_size: (height, width).
    Returns:
        crops (N, 3, height, width) float32; centers (N, 2) and scales (N, 2) float32 image px.
    """
    import cv2

    from pose_workloads.data.topdown import IMAGENET_MEAN, IMAGENET_STD, affine_transform_matrix, box_to_center_scale

    out_h, out_w = input_size
    mean = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
    std = np.asarray(IMAGENET_STD, np.float32) * 255.0
    crops, centers, scales = [], [], []
    for box in np.asarray(boxes_xywh, dtype=np.float32).reshape(-1, 4):
        center, scale = box_to_center_scale(box, out_w / out_h)
        matrix = affine_transform_matrix(center, scale, 0.0, input_size)
        crop = cv2.warpAffine(image_rgb, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR)
        crops.append(((crop.astype(np.float32) - mean) / std).transpose(2, 0, 1))
        centers.append(center)
        scales.append(scale)
    return (np.stack(crops) if crops else np.zeros((0, 3, out_h, out_w), np.float32),
            np.asarray(centers, np.float32).reshape(-1, 2), np.asarray(scales, np.float32).reshape(-1, 2))


def predict_people(heatmap_fn: HeatmapFn, image_rgb: np.ndarray, boxes_xywh: np.ndarray, pose_config: PoseConfig,
                   input_size: tuple[int, int], settings: EvalSettings) -> np.ndarray:
    """One image and its person boxes -> (N, K, 3) float32 (x, y, score) in image px."""
    from pose_workloads.decode import decode_heatmaps, heatmap_to_image_coords

    crops, centers, scales = crop_boxes(image_rgb, boxes_xywh, input_size)
    if len(crops) == 0:
        return np.zeros((0, pose_config.num_joints, 3), np.float32)
    heatmaps = np.concatenate([
        predict_heatmaps(heatmap_fn, crops[i : i + settings.batch_size], pose_config.flip_pairs, settings.flip_test)
        for i in range(0, len(crops), settings.batch_size)
    ])
    joints_hm, confidence = decode_heatmaps(heatmaps, settings.decoder, settings.sigma)
    coords = heatmap_to_image_coords(joints_hm, centers, scales, heatmaps.shape[-2:])
    return np.concatenate([coords, confidence[..., None]], axis=-1).astype(np.float32)


def read_boxes(path: str | Path | None, score_threshold: float = 0.0) -> dict[Any, list[tuple[np.ndarray, float]]]:
    """A COCO results file of person boxes -> {file_name or image_id: [(box xywh, score)]}.

    Entries are keyed by "file_name" when they have one, else by "image_id" (matched to files
    named by their id, COCO style 000000000785.jpg, or to a video's frame index from 0).
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found; check the --boxes path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not valid JSON ({err}); give a COCO results file of person boxes") from None
    if not isinstance(entries, list):
        raise BadInput(f"{path}: top level: expected a list of {{file_name or image_id, bbox, score}}")
    boxes: dict[Any, list[tuple[np.ndarray, float]]] = {}
    for i, entry in enumerate(entries):
        try:
            key = Path(entry["file_name"]).name if "file_name" in entry else int(entry["image_id"])
            box = np.asarray(entry["bbox"], dtype=np.float32).reshape(4)
            score = float(entry.get("score", 1.0))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BadInput(f"{path}: [{i}]: needs file_name or image_id, and bbox [x, y, w, h]; fix that entry") from None
        if entry.get("category_id", 1) == 1 and score >= score_threshold:
            boxes.setdefault(key, []).append((box, score))
    return boxes


def _boxes_for(boxes: dict, name: str, index: int | None, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The boxes given for one image or frame; none given at all -> the whole image as one box."""
    if not boxes:
        return np.array([[0, 0, width, height]], np.float32), np.ones(1, np.float32)
    key_id = index
    if key_id is None and Path(name).stem.isdigit():
        key_id = int(Path(name).stem)
    found = boxes.get(name) or boxes.get(key_id) or []
    return (np.array([b for b, _ in found], np.float32).reshape(-1, 4), np.array([s for _, s in found], np.float32))


def _input_images(path: Path) -> list[Path]:
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise BadInput(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this directory; check --input")
        return images
    return [path]


def _results_for(people: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray, threshold: float, **ids) -> list[dict]:
    out = []
    for person, box, box_score in zip(people, boxes, box_scores):
        confident = person[:, 2] > threshold
        score = float(box_score * (person[confident, 2].mean() if confident.any() else 0.0))
        out.append({**ids, "category_id": 1, "keypoints": person.reshape(-1).round(3).tolist(),
                    "score": round(score, 5), "bbox": [round(float(v), 2) for v in box]})
    return out


def inference(args) -> int:
    """`simple-pose inference -m MODEL --input IMAGE|DIR|VIDEO -r RESULTS [--boxes JSON] [-e SPEC]`.

    Writes RESULTS/images/<name>.png (or RESULTS/<video>_pose.mp4) with the skeletons drawn and
    RESULTS/keypoints_results.json (COCO results, plus file_name / frame and bbox).
    """
    from pose_workloads.data.coco import BadSample, read_image
    from pose_workloads.render import draw_skeletons, save_image

    predictor = _open_model(args.model)
    pose_config = predictor.info.pose_config
    input_size = tuple(predictor.info.input_size)
    settings = EvalSettings(batch_size=8)
    if args.spec:
        spec = load_spec(SimplePoseSpec, args.spec, args.overrides)
        settings = eval_settings(spec)
    heatmap_fn = lambda x: predictor(x)[0]  # noqa: E731
    source = Path(args.input)
    if not source.exists():
        raise BadInput(f"{source}: --input not found; give an image, a directory of images or a video")
    boxes = read_boxes(args.boxes)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []

    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        results = _video_inference(source, out_dir, heatmap_fn, boxes, pose_config, input_size, settings)
    else:
        (out_dir / "images").mkdir(exist_ok=True)
        paths = _input_images(source)
        for path in paths:
            try:
                image = read_image(path)
            except BadSample as err:
                raise BadInput(f"{err}; give an image file (or a video: {', '.join(VIDEO_SUFFIXES)})") from None
            box_xywh, box_scores = _boxes_for(boxes, path.name, None, image.shape[1], image.shape[0])
            people = predict_people(heatmap_fn, image, box_xywh, pose_config, input_size, settings)
            save_image(out_dir / "images" / f"{path.stem}.png",
                       draw_skeletons(image, people, pose_config, settings.joint_score_threshold))
            ids = {"file_name": path.name}
            if path.stem.isdigit():
                ids["image_id"] = int(path.stem)
            results += _results_for(people, box_xywh, box_scores, settings.joint_score_threshold, **ids)
        print(f"drew {len(results)} people on {len(paths)} images in {out_dir / 'images'}")

    from pose_workloads.files import write_atomic

    write_atomic(out_dir / "keypoints_results.json", json.dumps(results))
    print(f"wrote {out_dir / 'keypoints_results.json'}")
    return 0


def _video_inference(source: Path, out_dir: Path, heatmap_fn: HeatmapFn, boxes: dict, pose_config: PoseConfig,
                     input_size: tuple[int, int], settings: EvalSettings) -> list[dict]:
    import cv2

    from pose_workloads.render import draw_skeletons

    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise BadInput(f"{source}: OpenCV cannot open this video; convert it to .mp4 (H.264) or pass its frames as a directory")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    out_path = out_dir / f"{source.stem}_pose.mp4"
    tmp = out_dir / f".{out_path.name}.tmp.mp4"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    results: list[dict] = []
    frame_index = 0
    try:
        while True:
            ok, frame_bgr = capture.read()
            if not ok:
                break
            frame = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
            box_xywh, box_scores = _boxes_for(boxes, "", frame_index, width, height)
            people = predict_people(heatmap_fn, frame, box_xywh, pose_config, input_size, settings)
            drawn = draw_skeletons(frame, people, pose_config, settings.joint_score_threshold)
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            results += _results_for(people, box_xywh, box_scores, settings.joint_score_threshold,
                                    file_name=source.name, frame=frame_index)
            frame_index += 1
        writer.release()
        if frame_index == 0:
            raise BadInput(f"{source}: no frame could be read; check the video file")
        os.replace(tmp, out_path)
    finally:
        writer.release()
        capture.release()
        tmp.unlink(missing_ok=True)
    print(f"drew {len(results)} people on {frame_index} frames into {out_path}")
    return results
