"""Experiment specs, dataset specs and pose configs, validated by pydantic.

Torch-free on purpose: the launcher imports this module on the host to check a spec before any
container starts, and the workloads import it inside the container. One source of truth for
defaults, ranges and error text.

Path fields are typed `SpecPath` so the launcher can find and translate them (host <-> container)
without knowing each spec's layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class BadInput(ValueError):
    """Input a workload cannot use (a file, a field, a flag). `str(err)` is the one line the user
    sees: what is wrong, where, and the fix. `python -m pose_workloads` turns it into exit code 2."""


class SpecError(BadInput):
    """A spec that cannot be used. `str(err)` is one line naming the file, the field and the fix."""


class _PathMarker:
    """Metadata marking a str field as a filesystem path (see `spec_paths`)."""

    def __repr__(self) -> str:
        return "SpecPath"


_PATH = _PathMarker()
SpecPath = Annotated[str, _PATH]


class Strict(BaseModel):
    # An unknown key is almost always a typo: refuse it rather than silently ignore it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


# --------------------------------------------------------------------------------------------
# Pose configs: which joints, how they connect, how they mirror.
# --------------------------------------------------------------------------------------------

class PoseConfig(Strict):
    """A joint set. Indices are 0-based. `limbs` define the PAF channels of bottom-up models
    (defaults to `skeleton`); `sigmas` are the COCO OKS per-joint constants."""

    name: str = "custom"
    keypoints: list[str] = Field(min_length=1)
    skeleton: list[tuple[int, int]] = Field(default_factory=list)
    flip_pairs: list[tuple[int, int]] = Field(default_factory=list)
    sigmas: list[float] | None = None
    limbs: list[tuple[int, int]] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.keypoints)

    @property
    def paf_limbs(self) -> list[tuple[int, int]]:
        return list(self.limbs if self.limbs is not None else self.skeleton)

    @property
    def oks_sigmas(self) -> list[float]:
        # 0.089 is COCO's widest constant (hips/ankles): a conservative default for unknown joints.
        return list(self.sigmas) if self.sigmas is not None else [0.089] * self.num_joints

    @model_validator(mode="after")
    def _check_indices(self) -> "PoseConfig":
        k = len(self.keypoints)
        for field in ("skeleton", "flip_pairs", "limbs"):
            for a, b in getattr(self, field) or []:
                if not (0 <= a < k and 0 <= b < k):
                    raise ValueError(
                        f"{field} pair ({a}, {b}) is outside 0..{k - 1}; indices are 0-based into keypoints"
                    )
        if self.sigmas is not None and len(self.sigmas) != k:
            raise ValueError(f"sigmas has {len(self.sigmas)} values for {k} keypoints; give one per keypoint")
        return self


COCO17 = PoseConfig(
    name="coco17",
    keypoints=[
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ],
    # COCO's own skeleton, converted to 0-based.
    skeleton=[
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ],
    flip_pairs=[(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)],
    sigmas=[
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ],
)


def load_pose_config(path: str | Path | None) -> PoseConfig:
    """Read a pose config JSON; None gives COCO-17."""
    if path is None:
        return COCO17
    data = _read_mapping(Path(path))
    # TAO's bpnet_18joints.json nests the config under "pose_config".
    if set(data) == {"pose_config"}:
        data = data["pose_config"]
    return _validate(PoseConfig, data, Path(path))


# --------------------------------------------------------------------------------------------
# Simple Pose (top-down): one YAML per experiment, GluonCV's hyper-parameters as defaults.
# --------------------------------------------------------------------------------------------

class SimplePoseModel(Strict):
    name: str = "simple_pose_resnet50_v1b"
    pretrained_backbone: SpecPath | None = Field(
        default=None, description="local torchvision-layout weights file for the backbone; no download"
    )


class SimplePoseData(Strict):
    pose_config: SpecPath | None = Field(default=None, description="pose config JSON; null = COCO-17")
    train_images: SpecPath
    train_annotations: SpecPath
    val_images: SpecPath
    val_annotations: SpecPath
    val_detections: SpecPath | None = Field(
        default=None, description="person boxes in COCO results format; null = ground-truth boxes"
    )
    detection_score_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    min_keypoints: int = Field(default=1, ge=0, description="train people with fewer labelled joints are dropped")
    workers: int = Field(default=4, ge=0)


class SimplePoseAugmentation(Strict):
    scale_factor: float = Field(default=0.3, ge=0.0, lt=1.0)
    rotation_deg: float = Field(default=40.0, ge=0.0, le=180.0)
    rotation_prob: float = Field(default=0.6, ge=0.0, le=1.0)
    flip: bool = True
    half_body_prob: float = Field(default=0.3, ge=0.0, le=1.0)
    half_body_min_joints: int = Field(default=8, ge=0)


class SimplePoseTrain(Strict):
    input_size: tuple[int, int] = Field(default=(256, 192), description="[height, width] of the crop")
    sigma: float = Field(default=2.0, gt=0.0, description="Gaussian sigma in heatmap pixels")
    batch_size: int = Field(default=32, ge=1, description="per GPU (per process)")
    epochs: int = Field(default=140, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    lr_schedule: Literal["step", "cosine", "constant"] = "step"
    lr_steps: list[int] = Field(default_factory=lambda: [90, 120])
    lr_factor: float = Field(default=0.1, gt=0.0, le=1.0)
    warmup_epochs: float = Field(default=0.0, ge=0.0)
    seed: int = 0
    checkpoint_every: int = Field(default=10, ge=1, description="epochs between numbered checkpoints")
    eval_every: int = Field(default=10, ge=0, description="epochs between val AP evaluations; 0 = only at the end")
    amp: bool = Field(default=True, description="mixed precision on GPU (ignored on CPU)")
    channels_last: bool = True

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] % 32 or v[1] % 32:
            raise ValueError(f"input_size {list(v)} must be multiples of 32 (the backbone stride), e.g. [256, 192]")
        return v


class SimplePoseEvaluate(Strict):
    flip_test: bool = True
    decoder: Literal["argmax", "dark"] = "argmax"
    oks_nms_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    joint_score_threshold: float = Field(default=0.2, ge=0.0, le=1.0)
    batch_size: int = Field(default=32, ge=1)
    backend: Literal["faster", "pycocotools"] = "faster"


class SimplePoseSpec(Strict):
    model: SimplePoseModel = Field(default_factory=SimplePoseModel)
    data: SimplePoseData
    augmentation: SimplePoseAugmentation = Field(default_factory=SimplePoseAugmentation)
    train: SimplePoseTrain = Field(default_factory=SimplePoseTrain)
    evaluate: SimplePoseEvaluate = Field(default_factory=SimplePoseEvaluate)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        h, w = self.train.input_size
        return h // 4, w // 4


# --------------------------------------------------------------------------------------------
# BodyPoseNet (bottom-up): TAO's spec layout, so the blog's files read unchanged.
# --------------------------------------------------------------------------------------------

class BpnetDataSplit(Strict):
    images_root_dir_path: str
    mask_root_dir_path: str | None = None
    annotation_root_dir_path: str


class BpnetDatasetSpec(Strict):
    """coco_spec.json. Split paths are relative to `root_directory_path` (as in TAO)."""

    dataset: str = "coco"
    root_directory_path: SpecPath
    train_data: BpnetDataSplit
    test_data: BpnetDataSplit
    pose_config_path: SpecPath | None = Field(
        default=None, description="joint set of the annotations; null = COCO-17"
    )
    num_joints: int | None = Field(default=None, ge=1)
    duplicate_data_with_each_person_as_center: bool = True
    min_person_size_px: float = Field(default=32.0, ge=0.0, description="people smaller than this (box side) are not centres")
    min_keypoints: int = Field(default=5, ge=0, description="people with fewer labelled joints are not centres")
    min_inter_person_distance_ratio: float = Field(default=0.3, ge=0.0)
    # TAO keeps the COCO categories block in this file; accepted and unused.
    categories: list[dict[str, Any]] | None = None

    def split(self, mode: Literal["train", "test"]) -> BpnetDataSplit:
        return self.train_data if mode == "train" else self.test_data

    def resolve(self, relative: str) -> Path:
        return Path(self.root_directory_path) / relative


class BpnetPoseSection(Strict):
    target_shape: tuple[int, int] = (32, 32)
    pose_config_path: SpecPath


class BpnetImageDims(Strict):
    height: int = Field(default=256, ge=32)
    width: int = Field(default=256, ge=32)
    channels: Literal[3] = 3


class BpnetImageConfig(Strict):
    image_dims: BpnetImageDims = Field(default_factory=BpnetImageDims)
    image_encoding: Literal["jpg", "png"] = "jpg"


class BpnetDatasetConfig(Strict):
    root_data_path: SpecPath
    train_records_folder_path: SpecPath
    train_records_path: list[str] = Field(default_factory=lambda: ["train"])
    val_records_folder_path: SpecPath | None = None
    val_records_path: list[str] | None = None
    dataset_specs: dict[str, SpecPath]


class BpnetNormalization(Strict):
    image_scale: tuple[float, float, float] = (256.0, 256.0, 256.0)
    image_offset: tuple[float, float, float] = (0.5, 0.5, 0.5)
    mask_scale: tuple[float, float, float] = (255.0, 255.0, 255.0)


class BpnetSpatialAug(Strict):
    flip_lr_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    flip_tb_prob: float = Field(default=0.0, ge=0.0, le=1.0)
    rotate_deg_max: float = Field(default=40.0, ge=0.0, le=180.0)
    rotate_deg_min: float | None = None
    zoom_prob: float = Field(default=0.0, ge=0.0, le=1.0)
    zoom_ratio_min: float = Field(default=0.5, gt=0.0)
    zoom_ratio_max: float = Field(default=1.1, gt=0.0)
    translate_max_x: float = Field(default=40.0, ge=0.0)
    translate_min_x: float | None = None
    translate_max_y: float = Field(default=40.0, ge=0.0)
    translate_min_y: float | None = None
    use_translate_ratio: bool = False
    translate_ratio_max: float = 0.2
    translate_ratio_min: float = 0.2
    target_person_scale: float = Field(default=0.6, gt=0.0, le=2.0)


class BpnetAugmentation(Strict):
    spatial_augmentation_mode: Literal["person_centric", "standard", "standard_with_fixed_aspect_ratio"] = "person_centric"
    spatial_aug_params: BpnetSpatialAug = Field(default_factory=BpnetSpatialAug)
    identity_spatial_aug_params: BpnetSpatialAug | None = None


class BpnetLabelProcessor(Strict):
    paf_gaussian_sigma: float = Field(default=0.03, gt=0.0)
    heatmap_gaussian_sigma: float = Field(default=7.0, gt=0.0, description="in input pixels")
    paf_ortho_dist_thresh: float = Field(default=1.0, gt=0.0, description="half band width, in target pixels")


class BpnetDataloader(Strict):
    batch_size: int = Field(default=10, ge=1)
    shuffle_buffer_size: int = Field(default=2000, ge=1)
    workers: int = Field(default=4, ge=0)
    pose_config: BpnetPoseSection
    image_config: BpnetImageConfig = Field(default_factory=BpnetImageConfig)
    dataset_config: BpnetDatasetConfig
    normalization_params: BpnetNormalization = Field(default_factory=BpnetNormalization)
    augmentation_config: BpnetAugmentation = Field(default_factory=BpnetAugmentation)
    label_processor_config: BpnetLabelProcessor = Field(default_factory=BpnetLabelProcessor)

    @model_validator(mode="after")
    def _target_is_input_over_stride(self) -> "BpnetDataloader":
        dims = self.image_config.image_dims
        want = (dims.height // 8, dims.width // 8)
        if tuple(self.pose_config.target_shape) != want:
            raise ValueError(
                f"pose_config.target_shape {list(self.pose_config.target_shape)} must be image_dims / 8 = {list(want)} "
                "(the model stride is 8)"
            )
        return self


class BpnetBackbone(Strict):
    architecture: Literal["vgg", "light", "tiny"] = "vgg"
    mtype: str | None = None
    pretrained_weights: SpecPath | None = None
    use_bias: bool | None = None


class BpnetModel(Strict):
    backbone_attributes: BpnetBackbone = Field(default_factory=BpnetBackbone)
    stages: int = Field(default=3, ge=2, description="initial stage + refinement stages")
    heat_channels: int = Field(default=19, ge=2)
    paf_channels: int = Field(default=38, ge=2)
    use_self_attention: bool = False
    data_format: Literal["channels_last", "channels_first"] = "channels_last"
    use_bias: bool = True
    regularization_type: Literal["l1", "l2", "none"] = "l1"
    kernel_regularization_factor: float = Field(default=5e-4, ge=0.0)
    bias_regularization_factor: float = Field(default=0.0, ge=0.0)

    @field_validator("paf_channels")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"paf_channels {v} must be even: two (x, y) channels per limb")
        return v


class BpnetLRSchedule(Strict):
    class_name: Literal["SoftstartAnnealingLearningRateSchedule", "ConstantLearningRateSchedule"] = Field(
        default="SoftstartAnnealingLearningRateSchedule", alias="__class_name__"
    )
    soft_start: float = Field(default=0.05, ge=0.0, lt=1.0)
    annealing: float = Field(default=0.5, gt=0.0, le=1.0)
    base_learning_rate: float = Field(default=2e-5, gt=0.0)
    min_learning_rate: float = Field(default=8e-8, gt=0.0)


class BpnetOptimizer(Strict):
    class_name: Literal["WeightedMomentumOptimizer", "AdamOptimizer"] = Field(
        default="WeightedMomentumOptimizer", alias="__class_name__"
    )
    learning_rate_schedule: BpnetLRSchedule = Field(default_factory=BpnetLRSchedule)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    use_nesterov: bool = False


class BpnetTrainSpec(Strict):
    """bpnet_train_m1_coco.yaml, TAO's layout. Unknown keys are refused (typos)."""

    checkpoint_dir: SpecPath | None = Field(default=None, description="overridden by -r/--results_dir")
    checkpoint_n_epoch: int = Field(default=5, ge=1)
    num_epoch: int = Field(default=100, ge=1)
    pretrained_weights: SpecPath | None = None
    load_graph: bool = Field(default=False, description="pretrained_weights is a whole (e.g. pruned) model")
    use_stagewise_lr_multipliers: bool = True
    validation_every_n_epoch: int = Field(default=0, ge=0, description="0 = no in-training evaluation")
    seed: int = 0
    amp: bool = True
    dataloader: BpnetDataloader
    model: BpnetModel = Field(default_factory=BpnetModel)
    optimizer: BpnetOptimizer = Field(default_factory=BpnetOptimizer)


class BpnetInferenceSpec(Strict):
    """infer_spec.yaml: how evaluate/inference run a trained model."""

    model_path: SpecPath | None = Field(default=None, description="overridden by --model_filename")
    train_spec: SpecPath | None = None
    input_shape: tuple[int, int] = (368, 368)
    keep_aspect_ratio_mode: Literal["adjust_network_input", "pad_image_input"] | None = "adjust_network_input"
    output_stage_to_use: int | None = Field(
        default=None, ge=1, description="1 = the initial stage, 2 = the first refinement, ...; null = the last"
    )
    output_upsampling_factor: tuple[int, int] = (8, 8)
    heatmap_threshold: float = Field(default=0.1, ge=0.0, le=1.0)
    paf_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    multi_scale_inference: bool = False
    scales: list[float] = Field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0])
    min_parts: int = Field(default=4, ge=1, description="a person needs at least this many joints")
    min_person_score: float = Field(default=0.4, ge=0.0)
    backend: Literal["faster", "pycocotools"] = Field(
        default="faster", description="COCO evaluation: faster-coco-eval (C++) or pycocotools (the reference)"
    )

    @model_validator(mode="after")
    def _positive_sizes(self) -> "BpnetInferenceSpec":
        if min(self.input_shape) < 8:
            raise ValueError(f"input_shape {list(self.input_shape)} must be at least 8 px each (the model stride), e.g. [368, 368]")
        if min(self.output_upsampling_factor) < 1:
            raise ValueError(f"output_upsampling_factor {list(self.output_upsampling_factor)} must be >= 1, e.g. [8, 8]")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales {self.scales} must be positive, e.g. [0.5, 1.0, 1.5, 2.0]")
        return self

    @field_validator("keep_aspect_ratio_mode", mode="before")
    @classmethod
    def _none_string(cls, v: Any) -> Any:
        # TAO's files write the mode `None` as a YAML string.
        return None if isinstance(v, str) and v.lower() in ("none", "null") else v


# --------------------------------------------------------------------------------------------
# Loading, overrides, path walking.
# --------------------------------------------------------------------------------------------

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"{path}: file not found; check the path (and that its folder is mounted)")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        where = getattr(err, "problem_mark", None) or getattr(err, "lineno", None)
        raise SpecError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({where}); fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: top level must be a mapping of fields, got {type(data).__name__}")
    return data


def _fix_hint(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "remove it or check its spelling"
    if kind == "missing":
        return "add it"
    return "fix its value"


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    """One line: the file, every failing dotted field with pydantic's message, and the fix."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}; {_fix_hint(e)}")
    return f"{path}: " + " | ".join(parts)


def _validate(model_cls: type[BaseModel], data: dict[str, Any], path: Path | str):
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(path, err)) from None


def _parse_override_value(text: str) -> Any:
    # YAML scalars: 3 -> int, 1e-3 -> float, true -> bool, [1, 2] -> list, null -> None.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str], model_cls: type[BaseModel], path: Path | str) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (from `--set`) to raw spec data. Unknown keys are errors."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected key.sub=value, e.g. --set train.epochs=2")
        node: dict[str, Any] = data
        cls: type[BaseModel] | None = model_cls
        parts = key.split(".")
        for i, part in enumerate(parts):
            fields = _field_names(cls) if cls is not None else None
            if fields is not None and part not in fields:
                valid = ", ".join(sorted(fields))
                raise SpecError(f"{path}: --set {key}: unknown field {part!r}; valid here: {valid}")
            cls = _sub_model(cls, part) if cls is not None else None
            if i == len(parts) - 1:
                node[part] = _parse_override_value(value)
            else:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[part] = nxt
                node = nxt
    return data


def _field_names(cls: type[BaseModel]) -> set[str]:
    names = set()
    for name, info in cls.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return names


def _sub_model(cls: type[BaseModel], name: str) -> type[BaseModel] | None:
    for field_name, info in cls.model_fields.items():
        if name in (field_name, info.alias):
            for candidate in _annotation_models(info.annotation):
                return candidate
    return None


def _annotation_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_annotation_models(arg))
    return found


def load_spec(model_cls: type[BaseModel], path: str | Path, overrides: list[str] | None = None):
    """Read a YAML/JSON spec, apply `--set` overrides and validate. Raises SpecError (one line)."""
    path = Path(path)
    data = _read_mapping(path)
    if model_cls is PoseConfig and set(data) == {"pose_config"}:
        data = data["pose_config"]
    if overrides:
        data = apply_overrides(data, overrides, model_cls, path)
    return _validate(model_cls, data, path)


def save_spec(spec: BaseModel, path: str | Path) -> None:
    """Write the resolved spec (all defaults filled in) as YAML or JSON, atomically."""
    path = Path(path)
    data = spec.model_dump(mode="json", by_alias=True)
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _holds_paths(info: Any) -> bool:
    """True for `SpecPath`, `SpecPath | None` and `dict[str, SpecPath]` fields. pydantic keeps the
    marker in `info.metadata` for a bare SpecPath, and inside the type arguments otherwise."""
    if any(m is _PATH for m in info.metadata):
        return True
    return any(
        any(m is _PATH for m in getattr(arg, "__metadata__", ()))
        for arg in getattr(info.annotation, "__args__", ()) or ()
    )


def spec_paths(spec: BaseModel, prefix: str = "") -> list[tuple[str, str]]:
    """Every set path field as (dotted location, value), depth first in field order."""
    found: list[tuple[str, str]] = []
    for name, info in type(spec).model_fields.items():
        value = getattr(spec, name)
        loc = f"{prefix}{info.alias or name}"
        if _holds_paths(info):
            if isinstance(value, str):
                found.append((loc, value))
            elif isinstance(value, dict):
                found.extend((f"{loc}.{k}", v) for k, v in value.items() if isinstance(v, str))
        elif isinstance(value, BaseModel):
            found.extend(spec_paths(value, loc + "."))
    return found


def map_spec_paths(spec: BaseModel, fn) -> BaseModel:
    """A copy of `spec` with every path field passed through `fn(dotted_loc, value) -> new value`."""
    updates: dict[str, Any] = {}
    for name, info in type(spec).model_fields.items():
        value = getattr(spec, name)
        loc = info.alias or name
        if _holds_paths(info) and isinstance(value, str):
            updates[name] = fn(loc, value)
        elif _holds_paths(info) and isinstance(value, dict):
            updates[name] = {k: fn(f"{loc}.{k}", v) if isinstance(v, str) else v for k, v in value.items()}
        elif isinstance(value, BaseModel):
            updates[name] = map_spec_paths(value, lambda sub, v, _loc=loc: fn(f"{_loc}.{sub}", v))
    return spec.model_copy(update=updates)
