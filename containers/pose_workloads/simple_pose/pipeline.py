"""Simple Pose (top-down): the prediction pipeline shared by train's validation, evaluate,
inference and export: crops in, heatmaps, joints in image px out.

    boxes -> crops (crop_boxes, or TopDownDataset for a val set) -> heatmaps (flip test)
          -> joints (argmax or DARK) -> image px -> OKS-NMS -> COCO AP (coco_evaluation)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pose_workloads.bad_data import Skips
from pose_workloads.predictor import Predictor
from pose_workloads.specs import PoseConfig, SimplePoseSpec

NETWORK = "simple-pose"


# A function from a batch of crops (N, 3, H, W) float32, normalised as in training, to their
# heatmaps (N, K, H/4, W/4) float32: a torch model during training, runtime.Predictor otherwise.
HeatmapFn = Callable[[np.ndarray], np.ndarray]


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


def mirror_crops(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) crops mirrored left-right, as the flip test feeds them to the network."""
    return np.ascontiguousarray(images[..., ::-1])


def merge_flipped(heatmaps: np.ndarray, mirrored: np.ndarray, flip_pairs) -> np.ndarray:
    """The flip test's average: straight heatmaps (N, K, h, w) and those of `mirror_crops`."""
    from pose_workloads.decode import flip_back

    return 0.5 * (heatmaps + flip_back(mirrored, flip_pairs))


def predict_heatmaps(heatmap_fn: HeatmapFn, images: np.ndarray, flip_pairs, flip_test: bool) -> np.ndarray:
    """(N, 3, H, W) crops -> (N, K, h, w) heatmaps, averaged with the mirrored crops' when `flip_test`."""
    heatmaps = heatmap_fn(images)
    if flip_test:
        heatmaps = merge_flipped(heatmaps, heatmap_fn(mirror_crops(images)), flip_pairs)
    return heatmaps


class _EvalCrops:
    """A TopDownDataset's crops for evaluation: an unreadable image gives ("skipped", reason,
    file) instead of another person's crop (training's redraw would score one person twice)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from pose_workloads.media import BadSample

        try:
            return self.dataset._sample(index, np.random.default_rng((self.dataset.seed, 0, index)))
        except BadSample as err:
            return ("skipped", err.reason, Path(err.path).name)


def _collate_readable(items: list):
    """(default_collate of the readable crops or None, [(reason, file)] of the skipped ones)."""
    from torch.utils.data import default_collate

    readable = [item for item in items if not isinstance(item, tuple)]
    skipped = [(item[1], item[2]) for item in items if isinstance(item, tuple)]
    return (default_collate(readable) if readable else None), skipped


def predict_dataset(heatmap_fn: HeatmapFn, dataset, pose_config: PoseConfig, settings: EvalSettings,
                    skips: Skips | None = None):
    """Every crop of a TopDownDataset (train=False) -> joints in image px. Crops of unreadable
    images are skipped and counted in `skips` (bad_data.py).

    Returns:
        coords: (N, K, 2) float32 image px; maxvals: (N, K) float32; metas: one CropMeta of arrays.
    """
    import torch

    from pose_workloads.data.topdown import concat_metas
    from pose_workloads.decode import decode_heatmaps, heatmap_to_image_coords

    loader = torch.utils.data.DataLoader(_EvalCrops(dataset), batch_size=settings.batch_size, shuffle=False,
                                         num_workers=settings.workers, collate_fn=_collate_readable)
    coords, maxvals, metas = [], [], []
    for batch, skipped in loader:
        for reason, file in skipped:
            if skips is not None:
                skips.add(f"person crops: {reason}", file)
        if batch is None:
            continue
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
        dataset = TopDownDataset(val.people, pose_config, input_size, sigma=spec.train.sigma, train=False)
    else:
        detections = people_from_detections(
            spec.data.val_detections, val.images, pose_config.num_joints, spec.data.detection_score_threshold
        )
        dataset = TopDownDataset(detections.people, pose_config, input_size, sigma=spec.train.sigma, train=False,
                                 box_scores=detections.scores)
        dataset.skipped.update(detections.skipped)
    # What was skipped reading the annotations, reported with the evaluation (bad_data.py).
    dataset.skipped.update(val.skipped)
    return dataset


def coco_evaluation(heatmap_fn: HeatmapFn, dataset, pose_config: PoseConfig, annotations: str | Path,
                    settings: EvalSettings) -> tuple[list[dict], dict[str, Any]]:
    """Predict every val crop, OKS-NMS, COCO AP/AR and mean error per joint.

    Returns (COCO results list, metrics dict: METRIC_NAMES + "per_joint_error_px" {joint: px}).
    """
    from pose_workloads.evaluate import coco_keypoint_metrics, per_joint_mean_error, topdown_results

    sigmas = pose_config.oks_sigmas
    skips = Skips()
    skips.update(dataset.skipped)
    coords, maxvals, metas = predict_dataset(heatmap_fn, dataset, pose_config, settings, skips)
    results = [] if metas is None else topdown_results(
        coords, maxvals, metas, sigmas, settings.joint_score_threshold, settings.oks_nms_threshold
    )
    metrics: dict[str, Any] = coco_keypoint_metrics(annotations, results, sigmas, settings.backend)
    errors = per_joint_mean_error(results, annotations, sigmas) if results else np.full(len(sigmas), np.nan)
    metrics["per_joint_error_px"] = {name: float(e) for name, e in zip(pose_config.keypoints, errors)}
    metrics["skipped"] = skips.as_dict()
    skips.report("annotations and person crops", len(dataset))
    return results, metrics


def torch_heatmap_fn(model, device=None) -> HeatmapFn:
    """A torch model as a HeatmapFn (no grad, on the model's device)."""
    import torch

    device = device or next(model.parameters()).device

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(images)).to(device)).float().cpu().numpy()

    return run


def crop_boxes(image_rgb: np.ndarray, boxes_xywh: np.ndarray, input_size: tuple[int, int]):
    """Person boxes of one image -> normalised crops as in evaluation (padded box, no rotation).

    Args:
        image_rgb: (H, W, 3) uint8. boxes_xywh: (N, 4) float image px. input_size: (height, width).
    Returns:
        crops (N, 3, height, width) float32; centers (N, 2) and scales (N, 2) float32 image px.
    """
    import cv2

    from pose_workloads.data.crops import affine_transform_matrix, box_to_center_scale
    from pose_workloads.data.topdown import IMAGENET_MEAN, IMAGENET_STD

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
    crops, centers, scales = crop_boxes(image_rgb, boxes_xywh, input_size)
    if len(crops) == 0:
        return np.zeros((0, pose_config.num_joints, 3), np.float32)
    heatmaps = np.concatenate([
        predict_heatmaps(heatmap_fn, crops[i : i + settings.batch_size], pose_config.flip_pairs, settings.flip_test)
        for i in range(0, len(crops), settings.batch_size)
    ])
    return people_from_heatmaps(heatmaps, centers, scales, settings)


def people_from_heatmaps(heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray,
                         settings: EvalSettings) -> np.ndarray:
    """Heatmaps (N, K, h, w) of N crops (`crop_boxes`' centers, scales) -> (N, K, 3) float32
    (x, y, score) in image px."""
    from pose_workloads.decode import decode_heatmaps, heatmap_to_image_coords

    joints_hm, confidence = decode_heatmaps(heatmaps, settings.decoder, settings.sigma)
    coords = heatmap_to_image_coords(joints_hm, centers, scales, heatmaps.shape[-2:])
    return np.concatenate([coords, confidence[..., None]], axis=-1).astype(np.float32)


def open_model(path: str | Path) -> Predictor:
    """A simple-pose model file (.pth, .onnx, .engine) as a Predictor; another network is BadInput."""
    from pose_workloads.model_file import check_network
    from pose_workloads.runtime import load_predictor

    predictor = load_predictor(path)
    check_network(path, predictor.info.network, NETWORK)
    return predictor
