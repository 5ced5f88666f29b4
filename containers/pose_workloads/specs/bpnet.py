"""BodyPoseNet (bottom-up): TAO's spec layout, so the blog's files read unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pose_workloads.specs.fields import SpecPath, Strict

# BodyPoseNet's output stride: network input px per heatmap/PAF px. Every trunk of models/bpnet.py
# (VGG to conv4, light, tiny) downsamples 8x; the model carries it as `.stride`, the labels'
# target_shape and the inference input sizes follow it.
BPNET_STRIDE = 8


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
    min_person_size_px: float = Field(default=32.0, ge=0.0,
                                      description="people smaller than this (box side) are not centres")
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
    height: int = Field(default=256, ge=32, multiple_of=8, description="a multiple of the model stride, 8")
    width: int = Field(default=256, ge=32, multiple_of=8, description="a multiple of the model stride, 8")
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
    spatial_augmentation_mode: Literal[
        "person_centric", "standard", "standard_with_fixed_aspect_ratio"] = "person_centric"
    spatial_aug_params: BpnetSpatialAug = Field(default_factory=BpnetSpatialAug)
    identity_spatial_aug_params: BpnetSpatialAug | None = None


class BpnetLabelProcessor(Strict):
    paf_gaussian_sigma: float = Field(default=0.03, gt=0.0)
    heatmap_gaussian_sigma: float = Field(default=7.0, gt=0.0, le=256.0, description="in input pixels")
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
    def _target_is_input_over_stride(self) -> BpnetDataloader:
        dims = self.image_config.image_dims
        want = (dims.height // BPNET_STRIDE, dims.width // BPNET_STRIDE)
        if tuple(self.pose_config.target_shape) != want:
            raise ValueError(
                f"pose_config.target_shape {list(self.pose_config.target_shape)} must be "
                f"image_dims / {BPNET_STRIDE} = {list(want)} "
                f"(the model stride is {BPNET_STRIDE})"
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
    base_learning_rate: float = Field(default=2e-5, gt=0.0, le=10.0)
    min_learning_rate: float = Field(default=8e-8, gt=0.0, le=10.0)

    @model_validator(mode="after")
    def _min_below_base(self) -> BpnetLRSchedule:
        if self.min_learning_rate > self.base_learning_rate:
            raise ValueError(f"min_learning_rate {self.min_learning_rate:g} is above base_learning_rate "
                             f"{self.base_learning_rate:g}; make it smaller")
        return self


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
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="NumPy takes seeds 0 .. 2**32-1")
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = Field(
        default="float16", description="AMP's low precision: bfloat16 (Ampere and newer) needs no loss scaling")
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
    output_upsampling_factor: tuple[int, int] = Field(
        default=(8, 8), description="with upsample_maps: map px per network output px before grouping")
    upsample_maps: bool = Field(
        default=False,
        description="true = TAO's exact decode (maps upsampled by output_upsampling_factor, integer peaks, "
        "nearest PAF samples); false = grouping at the network's resolution (sub-pixel peaks, bilinear PAFs): "
        "the same AP, over 20x faster on crowds (bench/bench_grouping.py)")
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
    def _positive_sizes(self) -> BpnetInferenceSpec:
        if min(self.input_shape) < BPNET_STRIDE:
            raise ValueError(f"input_shape {list(self.input_shape)} must be at least {BPNET_STRIDE} px each "
                             "(the model stride), e.g. [368, 368]")
        if min(self.output_upsampling_factor) < 1:
            raise ValueError(
                f"output_upsampling_factor {list(self.output_upsampling_factor)} must be >= 1, e.g. [8, 8]")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales {self.scales} must be positive, e.g. [0.5, 1.0, 1.5, 2.0]")
        return self

    @field_validator("keep_aspect_ratio_mode", mode="before")
    @classmethod
    def _none_string(cls, v: Any) -> Any:
        # TAO's files write the mode `None` as a YAML string.
        return None if isinstance(v, str) and v.lower() in ("none", "null") else v

