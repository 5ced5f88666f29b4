"""Optimizer, learning-rate schedules (pure functions of progress) and kernel regularization."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from pose_workloads.training.job import Schedule, TrainJob

OPTIMIZERS = ("adam", "adamw", "sgd")


SCHEDULES = ("step", "cosine", "constant", "soft_start_annealing")


def soft_start_annealing_lr(progress: float, base: float, min_lr: float, soft_start: float, annealing: float) -> float:
    """TAO's SoftStartAnnealingLearningRateScheduler.get_learning_rate, on training progress.

    progress in [0, 1] (iteration / total iterations). Log-linear (exponential) from `min_lr` up
    to `base` until `soft_start`, `base` until `annealing`, then log-linear from `base` down to
    `min_lr` at progress 1.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < soft_start:
        t = progress / soft_start
    elif progress > annealing and annealing < 1.0:
        t = (1.0 - progress) / (1.0 - annealing)
    else:
        t = 1.0
    return math.exp(math.log(min_lr) + t * (math.log(base) - math.log(min_lr)))


def learning_rate(schedule: Schedule, base: float, epoch: float, total_epochs: int) -> float:
    """The learning rate at fractional `epoch` (0 at the start, `total_epochs` at the end)."""
    if schedule.kind == "step":
        lr = base * schedule.factor ** sum(1 for s in schedule.steps if epoch >= s)
    elif schedule.kind == "cosine":
        lr = schedule.min_lr + (base - schedule.min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / total_epochs))
    elif schedule.kind == "constant":
        lr = base
    elif schedule.kind == "soft_start_annealing":
        lr = soft_start_annealing_lr(epoch / total_epochs, base, schedule.min_lr, schedule.soft_start,
                                     schedule.annealing)
    else:
        raise ValueError(f"unknown schedule {schedule.kind!r}; valid: {', '.join(SCHEDULES)}")
    if schedule.warmup_epochs > 0 and epoch < schedule.warmup_epochs:
        lr *= 0.001 + (1.0 - 0.001) * epoch / schedule.warmup_epochs
    return lr


def build_optimizer(job: TrainJob, model: nn.Module) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over `job.param_groups(model)`; a group's lr is lr x its `lr_mult`."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = job.param_groups(model) if job.param_groups else [{"params": trainable}]
    for group in groups:
        group["lr"] = job.lr * group.get("lr_mult", 1.0)
    if job.optimizer == "adam":
        return torch.optim.Adam(groups, lr=job.lr, weight_decay=job.weight_decay)
    if job.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=job.lr, weight_decay=job.weight_decay)
    if job.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=job.lr, momentum=job.momentum, nesterov=job.nesterov,
                               weight_decay=job.weight_decay)
    raise ValueError(f"unknown optimizer {job.optimizer!r}; only {', '.join(OPTIMIZERS)} are supported")


def kernel_penalty(model: nn.Module, kind: Literal["none", "l1", "l2"]) -> torch.Tensor | None:
    """Sum of |w| (l1) or w^2 (l2) over convolution kernels, as TAO's kernel_regularizer
    (Keras's l1/l2: no 1/2, biases and BatchNorm excluded)."""
    if kind == "none":
        return None
    kernels = [m.weight for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd) and m.weight.requires_grad]
    if not kernels:
        return None
    if kind == "l1":
        return sum(w.abs().sum() for w in kernels)
    return sum(w.pow(2).sum() for w in kernels)
