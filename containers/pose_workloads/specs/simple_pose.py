"""Simple Pose (top-down): one YAML per experiment, GluonCV's hyper-parameters as defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from pose_workloads.specs.fields import SpecPath, Strict


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
    shuffle: Literal["people", "images"] = Field(
        default="people",
        description="people: a fresh order of people each epoch (Simple Baselines); images: a fresh order of "
        "images, each data worker drawing a batch from batch_size images it keeps decoded (one person of "
        "each), so it decodes an image once per epoch, not once per person; memory: batch_size decoded "
        "images per worker",
    )


class SimplePoseAugmentation(Strict):
    scale_factor: float = Field(default=0.3, ge=0.0, lt=1.0)
    rotation_deg: float = Field(default=40.0, ge=0.0, le=180.0)
    rotation_prob: float = Field(default=0.6, ge=0.0, le=1.0)
    flip: bool = True
    half_body_prob: float = Field(default=0.3, ge=0.0, le=1.0)
    half_body_min_joints: int = Field(default=8, ge=0)


class SimplePoseTrain(Strict):
    input_size: tuple[int, int] = Field(default=(256, 192), description="[height, width] of the crop")
    sigma: float = Field(default=2.0, gt=0.0, le=32.0, description="Gaussian sigma in heatmap pixels")
    batch_size: int = Field(default=32, ge=1, description="per GPU (per process)")
    epochs: int = Field(default=140, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    lr_schedule: Literal["step", "cosine", "constant"] = "step"
    lr_steps: list[int] = Field(default_factory=lambda: [90, 120])
    lr_factor: float = Field(default=0.1, gt=0.0, le=1.0)
    warmup_epochs: float = Field(default=0.0, ge=0.0)
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="NumPy takes seeds 0 .. 2**32-1")
    checkpoint_every: int = Field(default=10, ge=1, description="epochs between numbered checkpoints")
    eval_every: int = Field(default=10, ge=0, description="epochs between val AP evaluations; 0 = only at the end")
    amp: bool = Field(default=True, description="mixed precision on GPU (ignored on CPU)")
    amp_dtype: Literal["float16", "bfloat16"] = Field(
        default="float16", description="AMP's low precision: bfloat16 (Ampere and newer) needs no loss scaling")
    channels_last: bool = True
    freeze_batchnorm: bool = Field(
        default=False, description="BatchNorm layers normalise with their running statistics, which stay as "
        "loaded (detectron2's FrozenBatchNorm, TAO's freeze_bn); their scale and shift still train. For small "
        "per-GPU batches, and it makes N ranks train exactly as 1 process of the same global batch")

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) <= 0 or v[0] % 32 or v[1] % 32:
            raise ValueError(
                f"input_size {list(v)} must be positive multiples of 32 (the backbone stride), e.g. [256, 192]")
        return v

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup_within_training(cls, v: float, info: ValidationInfo) -> float:
        epochs = info.data.get("epochs")
        if epochs is not None and v > epochs:
            raise ValueError(f"warmup_epochs {v:g} is longer than epochs {epochs}; warm up for fewer epochs")
        return v

    @field_validator("lr_steps")
    @classmethod
    def _increasing_steps(cls, v: list[int]) -> list[int]:
        if any(step < 1 for step in v) or v != sorted(v):
            raise ValueError(f"lr_steps {v} must be increasing epochs >= 1, e.g. [90, 120]")
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

