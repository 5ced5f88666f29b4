"""BodyPoseNet (bottom-up): `train`, `evaluate` and `inference`, the actions behind
`python -m pose_workloads bpnet <action>` (flags in __main__.py).

train: spec -> dataset_convert's shards -> BpnetShardDataset (person-centric augmentation, heatmap /
PAF labels) -> BodyPoseNet -> per-stage masked L2 -> the shared loop in train.py (TAO's stagewise
LR multipliers, SoftStartAnnealing, L1/L2 kernel regularization, checkpoints, resume, DDP).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from pose_workloads.errors import BadInput, SpecError
from pose_workloads.specs import (
    BpnetDatasetSpec,
    BpnetInferenceSpec,
    BpnetTrainSpec,
    PoseConfig,
    load_pose_config,
    load_spec,
)

NETWORK = "bpnet"


# --- training ---

def bpnet_loss(outputs, batch):
    """TAO's loss: per stage, 0.5 x the squared error of heatmaps and PAFs, every target pixel
    weighted by the mask (crowds and unlabelled people count 0), summed over pixels and channels
    and divided by the batch size (the scale TAO's 2e-5 learning rate is set for); summed over
    stages, so every stage is supervised (OpenPose's intermediate supervision).

    outputs: [(heatmaps (N, K+1, h, w), pafs (N, 2L, h, w))] per stage; batch: "heatmaps", "pafs",
    "mask" (N, 1, h, w).
    """
    mask = batch["mask"]
    batch_size = mask.shape[0]
    heat_total = paf_total = 0.0
    for heatmaps, pafs in outputs:
        heat_total = heat_total + 0.5 * ((heatmaps.float() - batch["heatmaps"]) ** 2 * mask).sum() / batch_size
        paf_total = paf_total + 0.5 * ((pafs.float() - batch["pafs"]) ** 2 * mask).sum() / batch_size
    loss = heat_total + paf_total
    return loss, {"heatmaps": heat_total.detach(), "pafs": paf_total.detach()}


def check_channels(spec: BpnetTrainSpec, pose_config: PoseConfig, spec_path: str | Path) -> None:
    """The model's outputs must fit the pose config: joints + background, (x, y) per limb."""
    model = spec.model
    source = spec.dataloader.pose_config.pose_config_path
    heat, pafs = pose_config.num_joints + 1, 2 * len(pose_config.paf_limbs)
    if model.heat_channels != heat:
        raise SpecError(
            f"{spec_path}: model.heat_channels: {model.heat_channels}, but {source} has {pose_config.num_joints} "
            f"joints (+ 1 background); set model.heat_channels: {heat}"
        )
    if model.paf_channels != pafs:
        raise SpecError(
            f"{spec_path}: model.paf_channels: {model.paf_channels}, but {source} has {len(pose_config.paf_limbs)} "
            f"limbs (x and y each); set model.paf_channels: {pafs}"
        )


def train_manifests(spec: BpnetTrainSpec, spec_path: str | Path) -> list[Path]:
    """The dataset_convert outputs named by dataset_config (folder / each train_records_path)."""
    config = spec.dataloader.dataset_config
    manifests = []
    for i, name in enumerate(config.train_records_path):
        path = Path(config.train_records_folder_path) / name
        if not (path / "manifest.json").is_file() and not (path.suffix == ".json" and path.is_file()):
            raise SpecError(
                f"{spec_path}: dataloader.dataset_config.train_records_path[{i}]: {path} holds no converted "
                f"data (no manifest.json); run `pose bpnet dataset_convert -m train -o {path} -d <dataset spec>` "
                "or fix train_records_folder_path / train_records_path"
            )
        manifests.append(path)
    return manifests


def shard_dataset(spec: BpnetTrainSpec, manifests: list[Path], pose_config: PoseConfig, train: bool = True):
    """The BpnetShardDataset the train spec's dataloader section describes."""
    from pose_workloads.data.bottomup import BpnetShardDataset

    loader = spec.dataloader
    dims = loader.image_config.image_dims
    return BpnetShardDataset(
        manifests, pose_config, (dims.height, dims.width), tuple(loader.pose_config.target_shape),
        augmentation=loader.augmentation_config, labels=loader.label_processor_config,
        normalization=loader.normalization_params, shuffle_buffer_size=loader.shuffle_buffer_size,
        train=train, seed=spec.seed,
    )


def build_train_model(spec: BpnetTrainSpec, pose_config: PoseConfig, spec_path: str | Path):
    """The model to train and the model_config its checkpoints record.

    pretrained_weights (TAO's trainer field):
      - null: a fresh model (its backbone from model.backbone_attributes.pretrained_weights, if set);
      - with load_graph: a pose model file whose network is used as it is, e.g. a pruned one
        (its pickled `module`) to retrain, as TAO's load_graph;
      - else a pose model file: every tensor whose name and shape match is copied (TAO loads
        pretrained weights by layer name), or a torchvision-layout backbone file.
    """
    from pose_workloads import model_file
    from pose_workloads.models import build_model, load_backbone_weights

    model_config = spec.model.model_dump(mode="json")
    path = spec.pretrained_weights
    if path and spec.load_graph:
        ckpt = model_file.read(path)
        model_file.check_network(f"{spec_path}: pretrained_weights: {path}", ckpt["network"], NETWORK, "give a bpnet model file")
        model = model_file.build_model(ckpt)
        heat, pafs = model.heat_channels, model.paf_channels
        if (heat, pafs) != (spec.model.heat_channels, spec.model.paf_channels):
            raise SpecError(
                f"{spec_path}: pretrained_weights: {path} outputs {heat} heatmap and {pafs} PAF channels, the spec "
                f"{spec.model.heat_channels} and {spec.model.paf_channels}; use a model of this pose config or load_graph: False"
            )
        return model, dict(ckpt.get("model_config") or model_config), ckpt.get("module") is not None

    model = build_model(NETWORK, model_config, pose_config.num_joints)
    if path:
        if not Path(path).is_file():
            raise SpecError(f"{spec_path}: pretrained_weights: {path} not found; give a .pth file or null")
        loaded = model_file.load(path)
        if isinstance(loaded, dict) and loaded.get("network") == NETWORK and "state_dict" in loaded:
            own = model.state_dict()
            matching = {k: v for k, v in loaded["state_dict"].items() if k in own and own[k].shape == v.shape}
            if not matching:
                raise SpecError(f"{spec_path}: pretrained_weights: no tensor of {path} fits this model; check model.backbone_attributes")
            model.load_state_dict(matching, strict=False)
            print(f"pretrained_weights: {len(matching)}/{len(own)} tensors from {path}", flush=True)
        else:
            load_backbone_weights(model.backbone, path)
    # The weights travel in the checkpoint; evaluate must not look for the backbone file again.
    model_config["backbone_attributes"]["pretrained_weights"] = None
    return model, model_config, False


def optimizer_settings(spec: BpnetTrainSpec) -> dict[str, Any]:
    """TAO's optimizer section as TrainJob fields (WeightedMomentumOptimizer is SGD with momentum
    whose per-layer weights are the stagewise LR multipliers)."""
    from pose_workloads.training.job import Schedule

    optimizer = spec.optimizer
    schedule = optimizer.learning_rate_schedule
    if schedule.class_name == "SoftstartAnnealingLearningRateSchedule":
        lr_schedule = Schedule(kind="soft_start_annealing", min_lr=schedule.min_learning_rate,
                               soft_start=schedule.soft_start, annealing=schedule.annealing)
    else:
        lr_schedule = Schedule(kind="constant")
    return {
        "optimizer": "sgd" if optimizer.class_name == "WeightedMomentumOptimizer" else "adam",
        "lr": schedule.base_learning_rate,
        "momentum": optimizer.momentum,
        "nesterov": optimizer.use_nesterov,
        "schedule": lr_schedule,
    }


def validation_fn(spec: BpnetTrainSpec, spec_path: str | Path, pose_config: PoseConfig):
    """With validation_every_n_epoch: a function of the model giving COCO AP on the test split of
    the (first) dataset spec, computed as `bpnet evaluate` does, single-scale at the training
    input height. The best epoch is kept as model_best.pth. None when validation is off."""
    import torch

    from pose_workloads.data.coco import load_coco, read_image
    from pose_workloads.evaluate import coco_keypoint_metrics

    if spec.validation_every_n_epoch == 0:
        return None
    specs = spec.dataloader.dataset_config.dataset_specs
    if not specs:
        raise SpecError(f"{spec_path}: dataloader.dataset_config.dataset_specs: empty, so nothing to validate on; "
                        "name a dataset spec (its test split is used) or set validation_every_n_epoch: 0")
    dataset_spec = load_spec(BpnetDatasetSpec, next(iter(specs.values())))
    annotation_config = load_pose_config(dataset_spec.pose_config_path)
    to_annotation = annotation_joint_index(pose_config, annotation_config, Path(spec_path))
    split = dataset_spec.test_data
    annotations = dataset_spec.resolve(split.annotation_root_dir_path)
    data = load_coco(dataset_spec.resolve(split.images_root_dir_path), annotations, annotation_config)
    dims = spec.dataloader.image_config.image_dims
    settings, _ = inference_settings(BpnetInferenceSpec(input_shape=(dims.height, dims.width)),
                                     spec.dataloader.normalization_params)

    def evaluate_fn(model) -> dict[str, float]:
        device = next(model.parameters()).device

        def run(images):
            heatmaps, pafs = model(torch.from_numpy(images).to(device))[-1]
            return [heatmaps.float().cpu().numpy(), pafs.float().cpu().numpy()]

        results = []
        for record in data.images:
            image = read_image(record.image_path, (record.height, record.width))
            results += coco_results(predict_people(run, image, settings, pose_config), record.image_id, to_annotation)
        return coco_keypoint_metrics(annotations, results, annotation_config.oks_sigmas)

    return evaluate_fn


def train(args) -> int:
    """`bpnet train -e SPEC -r RESULTS [-k KEY] [--gpus N] [--set k=v]`; resumes from RESULTS."""
    import torch

    from pose_workloads.models import stagewise_param_groups
    from pose_workloads.training.data import seed_everything
    from pose_workloads.training.job import TrainJob
    from pose_workloads.training.loop import run_training

    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if getattr(args, "gpus", 1) > 1 and world_size == 1:
        print(f"note: --gpus {args.gpus} but this is one process; the launcher starts torchrun for you", file=sys.stderr)

    spec = load_spec(BpnetTrainSpec, args.spec, args.overrides)
    pose_config = load_pose_config(spec.dataloader.pose_config.pose_config_path)
    check_channels(spec, pose_config, args.spec)

    # Data first: a missing conversion fails here, before a model is built.
    dataset = shard_dataset(spec, train_manifests(spec, args.spec), pose_config, train=True)
    batch_size = spec.dataloader.batch_size
    steps = max(1, math.ceil(len(dataset) / (world_size * batch_size)))

    seed_everything(spec.seed)
    model, model_config, pickled_module = build_train_model(spec, pose_config, args.spec)
    evaluate_fn = validation_fn(spec, args.spec, pose_config)
    dims = spec.dataloader.image_config.image_dims
    bias_factor = spec.model.bias_regularization_factor
    bias_kind = spec.model.regularization_type

    def loss_fn(outputs, batch):
        loss, parts = bpnet_loss(outputs, batch)
        if bias_factor > 0 and bias_kind != "none":
            # train.py regularizes kernels only; TAO's bias_regularization_factor adds biases.
            biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd) and m.bias is not None]
            penalty = sum(b.abs().sum() if bias_kind == "l1" else b.pow(2).sum() for b in biases)
            loss = loss + bias_factor * penalty
            parts = {**parts, "bias_regularization": (bias_factor * penalty).detach()}
        return loss, parts

    job = TrainJob(
        network=NETWORK,
        model=model,
        model_config=model_config,
        pose_config=pose_config,
        input_size=(dims.height, dims.width),
        train_dataset=dataset,
        loss_fn=loss_fn,
        results_dir=Path(args.results_dir),
        epochs=spec.num_epoch,
        batch_size=batch_size,
        regularization=spec.model.regularization_type,
        regularization_factor=spec.model.kernel_regularization_factor,
        param_groups=stagewise_param_groups if spec.use_stagewise_lr_multipliers else None,
        checkpoint_every=spec.checkpoint_n_epoch,
        evaluate_fn=evaluate_fn,
        eval_every=spec.validation_every_n_epoch,
        workers=spec.dataloader.workers,
        seed=spec.seed,
        amp=spec.amp,
        channels_last=spec.model.data_format == "channels_last",
        steps_per_epoch=steps,
        spec=spec,
        save_module=pickled_module,
        **optimizer_settings(spec),
    )
    if rank == 0:
        print(f"{len(dataset)} training samples from {len(dataset.manifests)} converted split(s), "
              f"{pose_config.num_joints} joints, {len(pose_config.paf_limbs)} limbs", flush=True)
    result = run_training(job)
    if rank == 0:
        print(f"done: {args.results_dir}/model_final.pth (final loss {result.get('loss', float('nan')):.4f})")
    return 0


# --- evaluation and inference ---
#
# One image's path: `plan_input` sizes the network input for the spec's keep_aspect_ratio_mode and
# each scale, `predict_maps` runs the model and averages its upsampled maps over the scales,
# `grouping` turns the maps into people, `maps_to_image_px` puts them back on the image.
# `evaluate` runs this over the dataset spec's test split and scores COCO OKS AP; `inference` over
# images or a video, writing detections.json and, with --dump_visualizations, drawn skeletons.

import json  # noqa: E402  (this half of the file has its own imports: the other half is train's)
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402

from pose_workloads.files import write_atomic  # noqa: E402
from pose_workloads.specs import BpnetNormalization  # noqa: E402

STRIDE = 8  # network input px per output px
# OpenPose smooths the upsampled heatmaps with gaussian_filter(sigma=3) at input resolution
# before taking peaks; with another upsampling factor the sigma follows the map's resolution.
PEAK_SMOOTHING_INPUT_PX = 3.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DETECTIONS_FILE = "detections.json"
ANNOTATED_DIR = "images_annotated"


class InputPlan(NamedTuple):
    """How one image becomes one network input. Sizes are (height, width) px."""

    network_hw: tuple[int, int]  # the network input, multiples of the stride
    content_hw: tuple[int, int]  # the resized image, at the input's top-left; the rest is padding


def _round_up(value: float, multiple: int = STRIDE) -> int:
    # round(.., 6): 368 * 1.5 must stay 552, not become 552.0000001 -> 560.
    return max(multiple, math.ceil(round(value, 6) / multiple) * multiple)


def plan_input(image_hw: tuple[int, int], input_shape: tuple[int, int], mode: str | None, scale: float = 1.0) -> InputPlan:
    """The network input for one image (TAO's keep_aspect_ratio_mode), at `scale` x input_shape.

    - adjust_network_input: the height is input_shape's (x scale); the width follows the image's
      aspect ratio, rounded up to a multiple of 8 (OpenPose's boxsize 368 is a height, too).
    - pad_image_input: the image is scaled to fit input_shape with its aspect ratio kept and padded
      at the right and bottom (fixed input dims, as TensorRT engines need).
    - None: the image is stretched to input_shape.
    """
    height, width = image_hw
    want_h, want_w = input_shape[0] * scale, input_shape[1] * scale
    if mode == "adjust_network_input":
        content = (max(1, round(want_h)), max(1, round(width * want_h / height)))
        return InputPlan((_round_up(content[0]), _round_up(content[1])), content)
    network = (_round_up(want_h), _round_up(want_w))
    if mode == "pad_image_input":
        fit = min(network[0] / height, network[1] / width)
        content = (min(network[0], max(1, round(height * fit))), min(network[1], max(1, round(width * fit))))
        return InputPlan(network, content)
    return InputPlan(network, network)


@dataclass(frozen=True)
class InferenceSettings:
    """What evaluate and inference do to every image, resolved from the spec and the model file."""

    input_shape: tuple[int, int]  # (height, width)
    mode: str | None  # keep_aspect_ratio_mode
    scales: tuple[float, ...]
    upsampling: tuple[int, int]  # (y, x) map px per network output px
    heatmap_threshold: float
    paf_threshold: float
    min_parts: int
    min_person_score: float
    image_scale: tuple[float, float, float]  # pixels / image_scale - image_offset, as in training
    image_offset: tuple[float, float, float]


def inference_settings(spec: BpnetInferenceSpec, normalization: BpnetNormalization,
                       fixed_input: tuple[int, int] | None = None) -> tuple[InferenceSettings, str | None]:
    """Settings for `spec`, and a one-line notice when the model overrides some of them.

    A model with fixed input dims (a TensorRT engine) cannot change its input size, so, as TAO
    does, it runs single-scale with pad_image_input at its own dims.
    """
    scales = tuple(spec.scales) if spec.multi_scale_inference else (1.0,)
    mode, shape = spec.keep_aspect_ratio_mode, tuple(spec.input_shape)
    notice = None
    if fixed_input is not None:
        fixed = (int(fixed_input[0]), int(fixed_input[1]))
        if scales != (1.0,) or mode != "pad_image_input" or shape != fixed:
            notice = (f"note: the model's input is fixed at {fixed[0]}x{fixed[1]}: running single-scale with "
                      f"pad_image_input at that size (the spec asked for {shape[0]}x{shape[1]}, {mode}, scales {list(scales)})")
        scales, mode, shape = (1.0,), "pad_image_input", fixed
    settings = InferenceSettings(
        input_shape=shape, mode=mode, scales=scales, upsampling=tuple(spec.output_upsampling_factor),
        heatmap_threshold=spec.heatmap_threshold, paf_threshold=spec.paf_threshold,
        min_parts=spec.min_parts, min_person_score=spec.min_person_score,
        image_scale=tuple(normalization.image_scale), image_offset=tuple(normalization.image_offset),
    )
    return settings, notice


def prepare_input(image_rgb: np.ndarray, plan: InputPlan, settings: InferenceSettings) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 network input, normalised as in training.
    Padding is black, as the borders the training augmentation leaves."""
    import cv2

    (net_h, net_w), (height, width) = plan.network_hw, plan.content_hw
    if (height, width) != image_rgb.shape[:2]:
        shrink = height < image_rgb.shape[0]
        image_rgb = cv2.resize(image_rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    canvas = np.zeros((net_h, net_w, 3), np.float32)
    canvas[:height, :width] = image_rgb
    canvas = canvas / np.asarray(settings.image_scale, np.float32) - np.asarray(settings.image_offset, np.float32)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])


def _to_map_grid(maps: np.ndarray, plan: InputPlan, map_hw: tuple[int, int]) -> np.ndarray:
    """One scale's network output (C, h, w) -> (map_h, map_w, C) float32 on the common grid: the
    whole image at map_h x map_w px, bicubic (OpenPose upsamples bicubic: peaks fall between output
    px, where bilinear cannot put them).

    One resize per scale, straight from output px to grid px. Output px j stands for input px
    8j + 3.5 (the label convention of data/bottomup.py) and the image fills `plan.content_hw` of
    the input, so grid px m must sample output px (m + 0.5) / f - 0.5 with f = 8 * map / content:
    exactly what cv2.resize does when given the factor f rather than a size. The padding falls
    beyond the grid and is cut. (OpenPose upsamples x8, crops, then resizes: twice the work, and
    at scale 2 an intermediate map four times the grid.)
    """
    import cv2

    channels = maps.shape[0]
    map_h, map_w = map_hw
    factor_y = STRIDE * map_h / plan.content_hw[0]
    factor_x = STRIDE * map_w / plan.content_hw[1]
    grid = cv2.resize(np.ascontiguousarray(maps.transpose(1, 2, 0)), None, fx=factor_x, fy=factor_y,
                      interpolation=cv2.INTER_CUBIC)
    grid = grid.reshape(grid.shape[0], grid.shape[1], channels)  # OpenCV drops a channel axis of 1
    # The input is at least the content, so the resized output covers the grid; edge-pad anyway
    # against a rounding of OpenCV's output size.
    short = (max(0, map_h - grid.shape[0]), max(0, map_w - grid.shape[1]))
    if any(short):
        grid = np.pad(grid, ((0, short[0]), (0, short[1]), (0, 0)), mode="edge")
    return np.ascontiguousarray(grid[:map_h, :map_w])


class Maps(NamedTuple):
    heatmaps: np.ndarray  # (map_h, map_w, K + 1) float32, background last; map px over the whole image
    pafs: np.ndarray  # (map_h, map_w, 2L) float32


def predict_maps(model, image_rgb: np.ndarray, settings: InferenceSettings, pose_config: PoseConfig) -> Maps:
    """Run the model at every scale and average its upsampled maps on one grid (TAO/OpenPose
    multi-scale). The grid covers the image, at `upsampling / 8` px per scale-1 input px."""
    up_y, up_x = settings.upsampling
    base = plan_input(image_rgb.shape[:2], settings.input_shape, settings.mode)
    map_hw = (max(1, round(base.content_hw[0] * up_y / STRIDE)), max(1, round(base.content_hw[1] * up_x / STRIDE)))
    heat_sum = paf_sum = None
    for scale in settings.scales:
        plan = base if scale == 1.0 else plan_input(image_rgb.shape[:2], settings.input_shape, settings.mode, scale)
        heatmaps, pafs = model(prepare_input(image_rgb, plan, settings))[:2]
        _check_outputs(heatmaps, pafs, pose_config)
        heat = _to_map_grid(heatmaps[0], plan, map_hw)
        paf = _to_map_grid(pafs[0], plan, map_hw)
        heat_sum = heat if heat_sum is None else heat_sum + heat
        paf_sum = paf if paf_sum is None else paf_sum + paf
    count = np.float32(len(settings.scales))
    return Maps(heat_sum / count, paf_sum / count)


def _check_outputs(heatmaps: np.ndarray, pafs: np.ndarray, pose_config: PoseConfig) -> None:
    heat, paf = pose_config.num_joints + 1, 2 * len(pose_config.paf_limbs)
    if heatmaps.shape[1] != heat or pafs.shape[1] != paf:
        raise BadInput(
            f"model outputs {heatmaps.shape[1]} heatmap and {pafs.shape[1]} PAF channels but its pose config "
            f"{pose_config.name} needs {heat} and {paf}; export the model again from its .pth"
        )


def group_maps(maps: Maps, pose_config: PoseConfig, settings: InferenceSettings):
    """Peaks and PAF grouping on the averaged maps: `grouping.People` in map px."""
    from pose_workloads.grouping import find_peaks, group_people

    num_joints = pose_config.num_joints
    sigma = PEAK_SMOOTHING_INPUT_PX * settings.upsampling[1] / STRIDE
    peaks = find_peaks(maps.heatmaps[..., :num_joints].transpose(2, 0, 1), settings.heatmap_threshold, sigma)
    return group_people(peaks, maps.pafs.transpose(2, 0, 1), pose_config.paf_limbs, settings.paf_threshold,
                        min_parts=settings.min_parts, min_score=settings.min_person_score)


def maps_to_image_px(keypoints: np.ndarray, map_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """(P, K, 3) x, y, score in map px -> image px (pixel centres, as cv2.resize maps them),
    clipped to the image. Missing joints stay (0, 0, 0)."""
    height, width = image_hw
    out = np.array(keypoints, dtype=np.float32, copy=True)
    found = (out != 0).any(axis=-1)
    out[..., 0] = np.clip((out[..., 0] + 0.5) * (width / map_hw[1]) - 0.5, 0, width - 1)
    out[..., 1] = np.clip((out[..., 1] + 0.5) * (height / map_hw[0]) - 0.5, 0, height - 1)
    out[~found] = 0.0
    return out


class Prediction(NamedTuple):
    keypoints: np.ndarray  # (P, K, 3) float32 x, y, score in image px, the model's joints; missing = 0
    scores: np.ndarray  # (P,) float32, grouping's person score
    timings_ms: dict[str, float]  # "network": resizing, the model, its maps onto the grid; "grouping": peaks, people


def predict_people(model, image_rgb: np.ndarray, settings: InferenceSettings, pose_config: PoseConfig) -> Prediction:
    """One RGB image (H, W, 3) uint8 -> the people in it, image px."""
    start = time.perf_counter()
    # The network time includes resampling its maps: both grow with the number of scales.
    maps = predict_maps(model, image_rgb, settings, pose_config)
    middle = time.perf_counter()
    people = group_maps(maps, pose_config, settings)
    keypoints = maps_to_image_px(people.keypoints, maps.heatmaps.shape[:2], image_rgb.shape[:2])
    end = time.perf_counter()
    return Prediction(keypoints, people.scores, {"network": (middle - start) * 1e3, "grouping": (end - middle) * 1e3})


# ------------------------------------------------------------------------------------------------
# Model files
# ------------------------------------------------------------------------------------------------

class OpenModel(NamedTuple):
    predictor: Any  # runtime.Predictor: (1, 3, h, w) -> [heatmaps (1, K+1, h/8, w/8), pafs (1, 2L, h/8, w/8)]
    normalization: BpnetNormalization | None  # what the .pth was trained with, if it says


def open_model(path: str | Path, output_stage: int | None = None) -> OpenModel:
    """A bpnet model file (.pth, .onnx, .engine) as a predictor of one stage's maps.

    `.pth` files are rebuilt (model_file.open_predictor) so that any stage can be chosen;
    exported files give their last stage. The training normalisation comes with the file's info.
    """
    from pose_workloads import model_file
    from pose_workloads.runtime import load_predictor

    path = Path(path)
    if path.suffix in (".pth", ".pt"):
        predictor = model_file.open_predictor(path, NETWORK, output_stage)
    else:
        predictor = load_predictor(path)
        model_file.check_network(path, predictor.info.network, NETWORK)
        if output_stage is not None:
            print(f"note: output_stage_to_use applies to .pth models; {path.name} gives its last stage", file=sys.stderr)
    trained = predictor.info.normalization
    return OpenModel(predictor, BpnetNormalization.model_validate(trained) if trained else None)


def _model_path(args, spec: BpnetInferenceSpec) -> Path:
    path = args.model or spec.model_path
    if not path:
        raise BadInput(f"{args.inference_spec}: model_path: no model given; pass --model_filename or set model_path")
    return Path(path)


def _normalization(spec: BpnetInferenceSpec, spec_path: str, opened: OpenModel) -> BpnetNormalization:
    """The inference spec's train_spec (TAO's field) wins, then what the .pth recorded, then TAO's defaults."""
    if spec.train_spec:
        if not Path(spec.train_spec).is_file():
            raise SpecError(f"{spec_path}: train_spec: {spec.train_spec} not found; fix the path (is its folder mounted?) "
                            "or set it to null to use the model's own normalisation")
        return load_spec(BpnetTrainSpec, spec.train_spec).dataloader.normalization_params
    return opened.normalization or BpnetNormalization()


def _prepare(args) -> tuple[BpnetInferenceSpec, Path, OpenModel, InferenceSettings]:
    """Spec, model and settings shared by evaluate and inference (notices on stderr)."""
    spec = load_spec(BpnetInferenceSpec, args.inference_spec, args.overrides)
    model_path = _model_path(args, spec)
    opened = open_model(model_path, spec.output_stage_to_use)
    settings, notice = inference_settings(spec, _normalization(spec, args.inference_spec, opened), opened.predictor.fixed_input)
    if notice:
        print(notice, file=sys.stderr)
    return spec, model_path, opened, settings


def _describe(model_path: Path, opened: OpenModel, settings: InferenceSettings) -> str:
    shape = "x".join(map(str, settings.input_shape))
    return (f"{model_path} ({opened.predictor.backend}), input {shape} {settings.mode}, "
            f"scales {list(settings.scales)}, upsampling x{settings.upsampling[1]}")


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------

def annotation_joint_index(model_config: PoseConfig, annotation_config: PoseConfig, model_path: Path) -> list[int]:
    """For each annotated joint, the model joint of the same name (the 18-joint model's neck,
    which COCO does not label, is dropped)."""
    index = {name: k for k, name in enumerate(model_config.keypoints)}
    missing = [name for name in annotation_config.keypoints if name not in index]
    if missing:
        raise BadInput(
            f"{model_path}: pose_config: the model has no joint {', '.join(missing)} that the annotations "
            f"({annotation_config.name}) label; evaluate on annotations of the model's joints (dataset spec pose_config_path)"
        )
    return [index[name] for name in annotation_config.keypoints]


def coco_results(prediction: Prediction, image_id: int, to_annotation: list[int]) -> list[dict]:
    """One image's people as COCO keypoint results in the annotations' joint order.

    The result score is grouping's person score (mean of joint and limb scores) times the fraction
    of the model's joints found: complete people rank above confident fragments, as OKS rewards."""
    num_joints = prediction.keypoints.shape[1]
    results = []
    for person, score in zip(prediction.keypoints, prediction.scores):
        found = int(np.count_nonzero((person != 0).any(axis=-1)))
        results.append({
            "image_id": int(image_id),
            "category_id": 1,
            "keypoints": person[to_annotation].reshape(-1).round(2).tolist(),
            "score": round(float(score) * found / num_joints, 5),
        })
    return results


def evaluate(args) -> int:
    """`bpnet evaluate --inference_spec S --model_filename M --dataset_spec D --results_dir R`:
    COCO OKS AP on the dataset spec's test split; writes R/keypoints_results.json, R/metrics.json."""
    from pose_workloads.data.coco import BadSample, load_coco, read_image
    from pose_workloads.evaluate import (
        coco_keypoint_metrics,
        format_metrics_table,
        per_joint_mean_error,
        write_evaluation,
    )
    from pose_workloads.progress import track

    dataset_spec = load_spec(BpnetDatasetSpec, args.dataset_spec)
    spec, model_path, opened, settings = _prepare(args)
    pose_config = opened.predictor.info.pose_config
    annotation_config = load_pose_config(dataset_spec.pose_config_path)
    to_annotation = annotation_joint_index(pose_config, annotation_config, model_path)
    split = dataset_spec.test_data
    annotations = dataset_spec.resolve(split.annotation_root_dir_path)
    data = load_coco(dataset_spec.resolve(split.images_root_dir_path), annotations, annotation_config)
    print(f"evaluating {_describe(model_path, opened, settings)} on {len(data.images)} images of {annotations}", flush=True)

    results: list[dict] = []
    network_ms = grouping_ms = 0.0
    for record in track(data.images, len(data.images), "evaluating"):
        try:
            image = read_image(record.image_path, (record.height, record.width))
        except BadSample as err:
            raise BadInput(f"{err}; fix or remove this image of the test split") from None
        prediction = predict_people(opened.predictor, image, settings, pose_config)
        results += coco_results(prediction, record.image_id, to_annotation)
        network_ms += prediction.timings_ms["network"]
        grouping_ms += prediction.timings_ms["grouping"]

    sigmas = annotation_config.oks_sigmas
    metrics: dict[str, Any] = coco_keypoint_metrics(annotations, results, sigmas, spec.backend)
    errors = per_joint_mean_error(results, annotations, sigmas) if results else np.full(len(sigmas), np.nan)
    metrics["per_joint_error_px"] = {name: float(e) for name, e in zip(annotation_config.keypoints, errors)}
    write_evaluation(args.results_dir, results, metrics)
    print(format_metrics_table(metrics))
    count = max(len(data.images), 1)
    print(f"{len(results)} people in {len(data.images)} images; per image: network {network_ms / count:.1f} ms, "
          f"grouping {grouping_ms / count:.1f} ms")
    print(f"wrote {Path(args.results_dir) / 'metrics.json'} and {Path(args.results_dir) / 'keypoints_results.json'}")
    return 0


# ------------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------------

class Frame(NamedTuple):
    file: str  # the image's file name, or the video's
    index: int  # position in the directory listing, or the video frame number
    image: np.ndarray  # (H, W, 3) uint8 RGB


def _image_files(source: Path, input_type: str) -> list[Path]:
    if input_type == "dir":
        if not source.is_dir():
            raise BadInput(f"{source}: --input is not a directory; pass a folder of images or --input_type image/video")
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadInput(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this directory; check --input")
        return files
    if not source.is_file():
        raise BadInput(f"{source}: --input is not a file; pass an image, or --input_type dir for a folder")
    return [source]


def _read_frames(files: list[Path]) -> Iterator[Frame]:
    from pose_workloads.data.coco import BadSample, read_image

    for index, path in enumerate(files):
        try:
            yield Frame(path.name, index, read_image(path))
        except BadSample as err:
            raise BadInput(f"{err}; give image files ({', '.join(IMAGE_SUFFIXES)}) or --input_type video") from None


def _open_video(source: Path):
    import cv2

    if not source.is_file():
        raise BadInput(f"{source}: --input is not a file; pass a video ({', '.join(VIDEO_SUFFIXES)})")
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise BadInput(f"{source}: OpenCV cannot open this video; convert it to .mp4 (H.264) or pass its frames with --input_type dir")
    return capture


def _video_frames(capture, name: str) -> Iterator[Frame]:
    import cv2

    index = 0
    while True:
        ok, frame_bgr = capture.read()
        if not ok:
            return
        yield Frame(name, index, cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        index += 1


def detection_record(frame: Frame, prediction: Prediction, pose_config: PoseConfig) -> dict:
    """One frame of detections.json: every person's found joints by name, [x, y, score] image px."""
    people = []
    for person, score in zip(prediction.keypoints, prediction.scores):
        joints = {name: [round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                  for name, (x, y, s) in zip(pose_config.keypoints, person) if x or y or s}
        people.append({"score": round(float(score), 4), "num_joints": len(joints), "keypoints": joints})
    return {
        "file": frame.file,
        "frame": frame.index,
        "height": int(frame.image.shape[0]),
        "width": int(frame.image.shape[1]),
        "people": people,
        "timings_ms": {k: round(v, 2) for k, v in prediction.timings_ms.items()},
    }


class _VideoOut:
    """Annotated frames to an .mp4, written to a temp file and moved into place when complete."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        self.writer = None

    def write(self, image_rgb: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            size = (image_rgb.shape[1], image_rgb.shape[0])
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
        self.writer.write(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))

    def close(self, complete: bool) -> None:
        if self.writer is not None:
            self.writer.release()
            if complete:
                os.replace(self.tmp, self.path)
        self.tmp.unlink(missing_ok=True)


def inference(args) -> int:
    """`bpnet inference --inference_spec S --model_filename M --input_type dir|image|video --input P
    --results_dir R [--dump_visualizations]`: R/detections.json (per frame: file, frame index, people
    with [x, y, score] per joint name and a score; metadata: model, input shape, scales, timings)
    and, with --dump_visualizations, R/images_annotated/<image> or R/images_annotated/<video>.mp4."""
    from pose_workloads.progress import track
    from pose_workloads.render import draw_skeletons, save_image

    spec, model_path, opened, settings = _prepare(args)
    pose_config = opened.predictor.info.pose_config
    source = Path(args.input)
    out_dir = Path(args.results_dir)
    annotated_dir = out_dir / ANNOTATED_DIR
    capture = video_out = None
    if args.input_type == "video":
        import cv2

        capture = _open_video(source)
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
        frames = _video_frames(capture, source.name)
        if args.dump_visualizations:
            video_out = _VideoOut(annotated_dir / f"{source.stem}.mp4", capture.get(cv2.CAP_PROP_FPS) or 25.0)
    else:
        files = _image_files(source, args.input_type)
        total, frames = len(files), _read_frames(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.dump_visualizations:
        annotated_dir.mkdir(exist_ok=True)
    print(f"inference with {_describe(model_path, opened, settings)} on {source}", flush=True)

    records: list[dict] = []
    complete = False
    try:
        for frame in track(frames, total, "inference"):
            prediction = predict_people(opened.predictor, frame.image, settings, pose_config)
            records.append(detection_record(frame, prediction, pose_config))
            if args.dump_visualizations:
                drawn = draw_skeletons(frame.image, prediction.keypoints, pose_config, settings.heatmap_threshold)
                if video_out is not None:
                    video_out.write(drawn)
                else:
                    save_image(annotated_dir / frame.file, drawn)
        if not records:
            raise BadInput(f"{source}: no frame could be read; check the video file")
        complete = True
    finally:
        if video_out is not None:
            video_out.close(complete)
        if capture is not None:
            capture.release()

    frames_done = len(records)
    mean_ms = {key: round(sum(r["timings_ms"][key] for r in records) / frames_done, 2) for key in records[0]["timings_ms"]}
    detections = {
        "metadata": {
            "model": str(model_path),
            "backend": opened.predictor.backend,
            "pose_config": pose_config.name,
            "keypoints": list(pose_config.keypoints),
            "skeleton": [list(pair) for pair in pose_config.skeleton],
            "input_type": args.input_type,
            "input": str(source),
            "input_shape": list(settings.input_shape),
            "keep_aspect_ratio_mode": settings.mode,
            "scales": list(settings.scales),
            "output_upsampling_factor": list(settings.upsampling),
            "heatmap_threshold": settings.heatmap_threshold,
            "paf_threshold": settings.paf_threshold,
            "frames": frames_done,
            "people": sum(len(r["people"]) for r in records),
            "mean_timings_ms": mean_ms,
        },
        "frames": records,
    }
    write_atomic(out_dir / DETECTIONS_FILE, json.dumps(detections))
    people = detections["metadata"]["people"]
    print(f"{people} people in {frames_done} frames; per frame: network {mean_ms['network']:.1f} ms, grouping {mean_ms['grouping']:.1f} ms")
    if args.dump_visualizations:
        print(f"drew skeletons into {annotated_dir}")
    print(f"wrote {out_dir / DETECTIONS_FILE}")
    return 0
