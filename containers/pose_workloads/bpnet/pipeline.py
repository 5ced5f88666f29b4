"""BodyPoseNet (bottom-up): the prediction pipeline shared by train's validation, evaluate,
inference and export.

One image's path: `plan_input` sizes the network input for the spec's keep_aspect_ratio_mode and
each scale, `predict_maps` runs the model and averages its maps over the scales on one grid (the
network's resolution, or upsampled as TAO with upsample_maps), `group_maps` turns the maps into
people, `maps_to_image_px` puts them back on the image.
`open_model` + `inference_settings` (or `prepare`, from the command's flags) give the model and
what to do to every image.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pose_workloads.errors import BadInput, SpecError
from pose_workloads.specs import (
    BPNET_STRIDE,
    BpnetDatasetSpec,
    BpnetInferenceSpec,
    BpnetNormalization,
    BpnetTrainSpec,
    PoseConfig,
    load_pose_config,
    load_spec,
)

NETWORK = "bpnet"
STRIDE = BPNET_STRIDE  # network input px per output px (models/bpnet.py)
# OpenPose smooths the upsampled heatmaps with gaussian_filter(sigma=3) at input resolution
# before taking peaks; with another upsampling factor the sigma follows the map's resolution.
PEAK_SMOOTHING_INPUT_PX = 3.0


class InputPlan(NamedTuple):
    """How one image becomes one network input. Sizes are (height, width) px."""

    network_hw: tuple[int, int]  # the network input, multiples of the stride
    content_hw: tuple[int, int]  # the resized image, at the input's top-left; the rest is padding


def _round_up(value: float, multiple: int = STRIDE) -> int:
    # round(.., 6): 368 * 1.5 must stay 552, not become 552.0000001 -> 560.
    return max(multiple, math.ceil(round(value, 6) / multiple) * multiple)


def plan_input(image_hw: tuple[int, int], input_shape: tuple[int, int], mode: str | None,
               scale: float = 1.0) -> InputPlan:
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
    upsampling: tuple[int, int]  # (y, x) map px per network output px; (1, 1) unless `upsample`
    upsample: bool  # TAO's exact decode on upsampled maps; False = grouping at the network's resolution
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
                      f"pad_image_input at that size (the spec asked for {shape[0]}x{shape[1]}, {mode}, "
                      f"scales {list(scales)})")
        scales, mode, shape = (1.0,), "pad_image_input", fixed
    settings = InferenceSettings(
        input_shape=shape, mode=mode, scales=scales, upsample=spec.upsample_maps,
        upsampling=tuple(spec.output_upsampling_factor) if spec.upsample_maps else (1, 1),
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
    """Run the model at every scale and average its maps on one grid (TAO/OpenPose multi-scale).
    The grid covers the image, at `upsampling / 8` px per scale-1 input px: the network's own
    resolution unless the spec asks for TAO's upsampled decode."""
    image_hw = image_rgb.shape[:2]
    map_hw = map_grid_hw(image_hw, settings)
    heat_sum = paf_sum = None
    for scale in settings.scales:
        plan = plan_input(image_hw, settings.input_shape, settings.mode, scale)
        heatmaps, pafs = model(prepare_input(image_rgb, plan, settings))[:2]
        heat, paf = outputs_to_map_grid(heatmaps, pafs, plan, map_hw, pose_config)
        heat_sum = heat if heat_sum is None else heat_sum + heat
        paf_sum = paf if paf_sum is None else paf_sum + paf
    count = np.float32(len(settings.scales))
    return Maps(heat_sum / count, paf_sum / count)


def map_grid_hw(image_hw: tuple[int, int], settings: InferenceSettings) -> tuple[int, int]:
    """(map_h, map_w) of the common grid the maps of every scale are averaged on."""
    up_y, up_x = settings.upsampling
    base = plan_input(image_hw, settings.input_shape, settings.mode)
    return (max(1, round(base.content_hw[0] * up_y / STRIDE)), max(1, round(base.content_hw[1] * up_x / STRIDE)))


def outputs_to_map_grid(heatmaps: np.ndarray, pafs: np.ndarray, plan: InputPlan, map_hw: tuple[int, int],
                        pose_config: PoseConfig) -> tuple[np.ndarray, np.ndarray]:
    """One scale's network outputs (1, C, h, w) -> heatmaps and PAFs (map_h, map_w, C) on the grid."""
    _check_outputs(heatmaps, pafs, pose_config)
    return _to_map_grid(heatmaps[0], plan, map_hw), _to_map_grid(pafs[0], plan, map_hw)


def _check_outputs(heatmaps: np.ndarray, pafs: np.ndarray, pose_config: PoseConfig) -> None:
    heat, paf = pose_config.num_joints + 1, 2 * len(pose_config.paf_limbs)
    if heatmaps.shape[1] != heat or pafs.shape[1] != paf:
        raise BadInput(
            f"model outputs {heatmaps.shape[1]} heatmap and {pafs.shape[1]} PAF channels but its pose config "
            f"{pose_config.name} needs {heat} and {paf}; export the model again from its .pth"
        )


def group_maps(maps: Maps, pose_config: PoseConfig, settings: InferenceSettings):
    """Peaks and PAF grouping on the averaged maps: `grouping.People` in map px."""
    from pose_workloads.grouping import find_people, group_people
    from pose_workloads.peaks import find_peaks

    num_joints = pose_config.num_joints
    heatmaps, pafs = maps.heatmaps[..., :num_joints].transpose(2, 0, 1), maps.pafs.transpose(2, 0, 1)
    sigma = PEAK_SMOOTHING_INPUT_PX * settings.upsampling[1] / STRIDE
    if not settings.upsample:
        return find_people(heatmaps, pafs, pose_config.paf_limbs, settings.heatmap_threshold, settings.paf_threshold,
                           sigma, min_parts=settings.min_parts, min_score=settings.min_person_score)
    peaks = find_peaks(heatmaps, settings.heatmap_threshold, sigma)
    return group_people(peaks, pafs, pose_config.paf_limbs, settings.paf_threshold,
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
    keypoints, scores = people_from_maps(maps, image_rgb.shape[:2], pose_config, settings)
    end = time.perf_counter()
    return Prediction(keypoints, scores, {"network": (middle - start) * 1e3, "grouping": (end - middle) * 1e3})


def people_from_maps(maps: Maps, image_hw: tuple[int, int], pose_config: PoseConfig,
                     settings: InferenceSettings) -> tuple[np.ndarray, np.ndarray]:
    """Averaged maps of one image -> keypoints (P, K, 3) float32 image px and scores (P,) float32."""
    people = group_maps(maps, pose_config, settings)
    return maps_to_image_px(people.keypoints, maps.heatmaps.shape[:2], image_hw), people.scores


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
            print(f"note: output_stage_to_use applies to .pth models; {path.name} gives its last stage",
                  file=sys.stderr)
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
            raise SpecError(f"{spec_path}: train_spec: {spec.train_spec} not found; fix the path "
                            "(is its folder mounted?) or set it to null to use the model's own normalisation")
        return load_spec(BpnetTrainSpec, spec.train_spec).dataloader.normalization_params
    return opened.normalization or BpnetNormalization()


def prepare(args) -> tuple[BpnetInferenceSpec, Path, OpenModel, InferenceSettings]:
    """Spec, model and settings shared by evaluate and inference (notices on stderr)."""
    spec = load_spec(BpnetInferenceSpec, args.inference_spec, args.overrides)
    model_path = _model_path(args, spec)
    opened = open_model(model_path, spec.output_stage_to_use)
    settings, notice = inference_settings(spec, _normalization(spec, args.inference_spec, opened),
                                          opened.predictor.fixed_input)
    if notice:
        print(notice, file=sys.stderr)
    return spec, model_path, opened, settings


def describe(model_path: Path, opened: OpenModel, settings: InferenceSettings) -> str:
    shape = "x".join(map(str, settings.input_shape))
    maps = (f"maps upsampled x{settings.upsampling[1]}" if settings.upsample
            else "grouping at the network's resolution")
    return (f"{model_path} ({opened.predictor.backend}), input {shape} {settings.mode}, "
            f"scales {list(settings.scales)}, {maps}")


def annotation_joint_index(model_config: PoseConfig, annotation_config: PoseConfig, model_path: Path) -> list[int]:
    """For each annotated joint, the model joint of the same name (the 18-joint model's neck,
    which COCO does not label, is dropped)."""
    index = {name: k for k, name in enumerate(model_config.keypoints)}
    missing = [name for name in annotation_config.keypoints if name not in index]
    if missing:
        raise BadInput(
            f"{model_path}: pose_config: the model has no joint {', '.join(missing)} that the annotations "
            f"({annotation_config.name}) label; evaluate on annotations of the model's joints "
            "(dataset spec pose_config_path)"
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
    from pose_workloads.bad_data import Skips
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
