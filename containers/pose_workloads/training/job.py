"""What a network module hands to the training loop: a `TrainJob` and its LR `Schedule`."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from pose_workloads.specs import PoseConfig


@dataclass
class Schedule:
    """Learning-rate schedule, in epochs (fractional: the LR is updated every iteration).

    step: base * factor ** (number of `steps` passed), GluonCV's (90, 120) x 0.1.
    cosine: from base down to `min_lr` over all epochs.
    constant: base.
    soft_start_annealing: TAO's SoftStartAnnealing over training progress; see
        `soft_start_annealing_lr`.
    `warmup_epochs` multiplies any of them by a linear ramp from 0.001 to 1 (mmpose's LinearLR).
    """

    kind: Literal["step", "cosine", "constant", "soft_start_annealing"] = "step"
    steps: tuple[float, ...] = ()
    factor: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    soft_start: float = 0.05
    annealing: float = 0.5


@dataclass
class TrainJob:
    """Everything `run_training` needs. Filled in by simple_pose.train / bpnet.train.

    Callables:
        loss_fn(outputs, batch) -> (loss tensor, {part name: float or tensor})
        param_groups(model) -> list of torch param-group dicts; a group may carry `lr_mult`
            (TAO's stagewise LR multipliers). None: one group with every parameter.
        batch_metrics_fn(outputs, batch) -> {name: float}, averaged over the epoch
            (e.g. heatmap accuracy).
        evaluate_fn(model) -> {name: float}, e.g. {"AP": 0.71, ...}; called on rank 0 with the
            plain (not DDP) model in eval mode. "AP" decides `model_best.pth`.
    Datasets: map-style (sharded by DistributedSampler, or by image with `sample_groups`) or
    IterableDataset (it must split its stream across data workers itself, as webdataset does;
    across ranks too if it has `shards_by_rank = True`, else the loop keeps every world_size-th
    item; `steps_per_epoch` is then required). A dataset with `set_epoch(epoch)` is told the epoch
    before each epoch starts, so its augmentation can draw from (seed, epoch, index) and not
    depend on workers or ranks.
    """

    network: str
    model: nn.Module
    model_config: dict[str, Any]
    pose_config: PoseConfig
    input_size: tuple[int, int]
    train_dataset: Dataset
    loss_fn: Callable[[Any, Any], tuple[torch.Tensor, dict[str, Any]]]
    results_dir: Path
    epochs: int
    batch_size: int
    lr: float
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: Schedule = field(default_factory=Schedule)
    regularization: Literal["none", "l1", "l2"] = "none"
    regularization_factor: float = 0.0
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None
    collate: Callable | None = None
    batch_metrics_fn: Callable[[Any, Any], dict[str, float]] | None = None
    evaluate_fn: Callable[[nn.Module], dict[str, float]] | None = None
    eval_every: int = 0
    checkpoint_every: int = 10
    workers: int = 0
    seed: int = 0
    amp: bool = True
    amp_dtype: str = "float16"  # or "bfloat16": no GradScaler (its exponent range is float32's)
    channels_last: bool = True
    freeze_batchnorm: bool = False  # BatchNorm layers stay in eval mode while training (see train_mode)
    steps_per_epoch: int | None = None
    # One key per training sample (its image), or None. When set, each epoch's order lets every
    # data worker draw its batches from images it keeps decoded (data.ImageGroupedSampler; the
    # dataset's cache must hold batch_size images) instead of DistributedSampler's.
    sample_groups: Sequence[Hashable] | None = None
    spec: Any = None
    inputs_key: str = "image"
    device: str | None = None
