"""The one training loop, for Simple Pose and BodyPoseNet.

Read in run order, like torchvision's references/classification/train.py: `run_training(job)`
sets up processes, device, optimizer, schedule and resume, then loops over `train_one_epoch()`,
evaluating and checkpointing between epochs. A network module (simple_pose.py, bpnet.py) fills in
a `TrainJob` (its model, data, loss and hyper-parameters) and calls `run_training`.

Reproducibility, so that a run killed with `kill -9` and restarted ends with the same weights as
an uninterrupted one: every epoch starts by seeding all RNGs from (seed, epoch, rank), the
sampler's order is a function of (seed, epoch) (DistributedSampler, also with one process), data
workers are seeded from the loader's generator, and training resumes only at epoch boundaries
(from `checkpoint_last.pth`, the last complete epoch). Nothing a previous epoch drew leaks into
the next.

Batches are dicts (the datasets' own collate or torch's default): the model is called on
`batch[job.inputs_key]` ("image"), `job.loss_fn(outputs, batch)` gives the loss and its parts.

Results directory (written by rank 0 only, every file atomically: temp file + os.replace):
    checkpoint_last.pth        every epoch, full training state (resume reads it)
    checkpoint_epoch_NNN.pth   every `checkpoint_every` epochs
    model_best.pth             when validation AP improves
    model_final.pth            at the end
    metrics.jsonl              one JSON object per epoch
    curves.png                 loss, LR and AP against epoch (render.plot_curves), redrawn
                               after each epoch, at most every CURVES_EVERY_S seconds
    spec.yaml                  the resolved spec
    tensorboard/               TensorBoard scalars
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from pose_workloads.files import atomic_path, write_atomic
from pose_workloads.errors import BadInput
from pose_workloads.specs import PoseConfig, save_spec

CHECKPOINT_LAST = "checkpoint_last.pth"
MODEL_BEST = "model_best.pth"
MODEL_FINAL = "model_final.pth"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
CURVES_EVERY_S = 15.0
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("step", "cosine", "constant", "soft_start_annealing")


# --------------------------------------------------------------------------------------------
# What a network module hands to the loop.
# --------------------------------------------------------------------------------------------

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
    Datasets: map-style (sharded by DistributedSampler) or IterableDataset (it must split its
    stream across data workers itself, as webdataset does; across ranks too if it has
    `shards_by_rank = True`, else the loop keeps every world_size-th item; `steps_per_epoch` is then
    required). A dataset with `set_epoch(epoch)` is told the epoch before each epoch starts, so
    its augmentation can draw from (seed, epoch, index) and not depend on workers or ranks.
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
    channels_last: bool = True
    steps_per_epoch: int | None = None
    spec: Any = None
    inputs_key: str = "image"
    device: str | None = None
    # Also pickle the whole module into model files: a pruned model's shapes differ from what
    # model_config builds (docs/ARCHITECTURE.md `module`). Such checkpoints need weights_only=False.
    save_module: bool = False


@dataclass
class EpochStats:
    """What one pass over the training data measured (already averaged over ranks)."""

    loss: float
    parts: dict[str, float]
    metrics: dict[str, float]
    lr: float
    images: int
    seconds: float


# --------------------------------------------------------------------------------------------
# Learning-rate schedules: pure functions of progress.
# --------------------------------------------------------------------------------------------

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
        lr = soft_start_annealing_lr(epoch / total_epochs, base, schedule.min_lr, schedule.soft_start, schedule.annealing)
    else:
        raise ValueError(f"unknown schedule {schedule.kind!r}; valid: {', '.join(SCHEDULES)}")
    if schedule.warmup_epochs > 0 and epoch < schedule.warmup_epochs:
        lr *= 0.001 + (1.0 - 0.001) * epoch / schedule.warmup_epochs
    return lr


# --------------------------------------------------------------------------------------------
# Processes, seeds, data.
# --------------------------------------------------------------------------------------------

@dataclass
class Processes:
    rank: int
    world_size: int
    local_rank: int
    started_here: bool  # this module called init_process_group, so it also tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_processes() -> Processes:
    """torchrun's environment -> a process group (NCCL on GPU, gloo on CPU); one process without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return Processes(0, 1, 0, False)
    started = False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
        started = True
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank, started)


def seed_everything(seed: int, epoch: int = 0, rank: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from (seed, epoch, rank)."""
    mixed = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    random.seed(mixed)
    np.random.seed(mixed)
    torch.manual_seed(mixed)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator (base_seed + worker_id); NumPy and
    # Python are not, so a worker would otherwise repeat its parent's NumPy stream.
    # https://pytorch.org/docs/stable/notes/randomness.html#dataloader
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class _EveryNth(IterableDataset):
    """Items rank, rank + world_size, ... of a stream: rank sharding for IterableDatasets."""

    def __init__(self, dataset: IterableDataset, rank: int, world_size: int):
        self.dataset, self.rank, self.world_size = dataset, rank, world_size

    def __iter__(self):
        for i, item in enumerate(self.dataset):
            if i % self.world_size == self.rank:
                yield item


def make_train_loader(job: TrainJob, epoch: int, procs: Processes) -> DataLoader:
    """The epoch's loader. Its order is a function of (seed, epoch, rank) only."""
    dataset = job.train_dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([job.seed, epoch, procs.rank, 1]).generate_state(1)[0]))
    common = dict(
        batch_size=job.batch_size,
        num_workers=job.workers,
        collate_fn=job.collate,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_seed_worker,
        generator=generator,
        # Fresh workers each epoch: they must see this epoch's set_epoch and seeds.
        persistent_workers=False,
    )
    if isinstance(dataset, IterableDataset):
        if procs.world_size > 1 and not getattr(dataset, "shards_by_rank", False):
            dataset = _EveryNth(dataset, procs.rank, procs.world_size)
        return DataLoader(dataset, **common)
    # DistributedSampler also with one process: one code path, order = permutation(seed + epoch).
    sampler = DistributedSampler(dataset, num_replicas=procs.world_size, rank=procs.rank, shuffle=True, seed=job.seed)
    sampler.set_epoch(epoch)
    # Drop the ragged last batch as GluonCV (last_batch='discard'), unless that leaves nothing.
    return DataLoader(dataset, sampler=sampler, drop_last=len(sampler) >= job.batch_size, **common)


def iterations_per_epoch(job: TrainJob, procs: Processes) -> int:
    if isinstance(job.train_dataset, IterableDataset):
        if not job.steps_per_epoch:
            raise ValueError("an IterableDataset needs TrainJob.steps_per_epoch (it has no length)")
        return job.steps_per_epoch
    per_rank = math.ceil(len(job.train_dataset) / procs.world_size)
    if per_rank == 0:
        raise BadInput("the training set is empty; check the annotation file and the image folder")
    return per_rank // job.batch_size if per_rank >= job.batch_size else 1


# --------------------------------------------------------------------------------------------
# Optimizer and regularization.
# --------------------------------------------------------------------------------------------

def build_optimizer(job: TrainJob, model: nn.Module) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over `job.param_groups(model)`; a group's lr is lr x its `lr_mult`."""
    groups = job.param_groups(model) if job.param_groups else [{"params": [p for p in model.parameters() if p.requires_grad]}]
    for group in groups:
        group["lr"] = job.lr * group.get("lr_mult", 1.0)
    if job.optimizer == "adam":
        return torch.optim.Adam(groups, lr=job.lr, weight_decay=job.weight_decay)
    if job.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=job.lr, weight_decay=job.weight_decay)
    if job.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=job.lr, momentum=job.momentum, nesterov=job.nesterov, weight_decay=job.weight_decay)
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


# --------------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------------

def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temp file: a reader (or a resume after kill -9) never sees half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def model_file(job: TrainJob, model: nn.Module, **extra: Any) -> dict[str, Any]:
    """The self-describing model dict of docs/ARCHITECTURE.md (state_dict on CPU, not DDP-prefixed)."""
    return {
        "network": job.network,
        "model_config": dict(job.model_config),
        "pose_config": job.pose_config.model_dump(mode="json"),
        "input_size": [int(job.input_size[0]), int(job.input_size[1])],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "spec": _spec_dict(job.spec),
        **({"module": copy.deepcopy(model).cpu()} if job.save_module else {}),
        **extra,
    }


def _spec_dict(spec: Any) -> Any:
    if spec is None:
        return None
    if hasattr(spec, "model_dump"):
        return spec.model_dump(mode="json", by_alias=True)
    return spec


def _rng_state() -> dict[str, Any]:
    # Plain types and tensors only, so that torch.load(weights_only=True) opens the checkpoint.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [random.getstate()[0], list(random.getstate()[1])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal = state["python"]
    random.setstate((version, tuple(internal), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _remove_stale_temp_files(results_dir: Path) -> None:
    # A process killed inside save_atomic leaves its temp file; nothing else writes `.*.tmp` here.
    for tmp in results_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("epoch", 0) <= up_to_epoch]


# --------------------------------------------------------------------------------------------
# Progress: a rich bar on a terminal, plain lines otherwise (CI, docker logs).
# --------------------------------------------------------------------------------------------

class EpochProgress:
    """Shows images/s, loss and ETA while an epoch runs. Silent on ranks other than 0."""

    def __init__(self, epoch: int, epochs: int, total: int, enabled: bool):
        self.epoch, self.epochs, self.total, self.enabled = epoch, epochs, total, enabled
        self.done = 0
        self.start = time.perf_counter()
        self.bar = None
        self.log_every = max(1, total // 10)
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(f"epoch {epoch}/{epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[ips]:.0f} img/s  loss {task.fields[loss]:.5f}"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total, ips=0.0, loss=float("nan"))
            self.bar.start()

    def update(self, images_per_s: float, loss: float, lr: float) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, advance=1, ips=images_per_s, loss=loss)
        elif self.done % self.log_every == 0 or self.done == self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.done * (self.total - self.done)
            print(
                f"epoch {self.epoch}/{self.epochs} [{self.done}/{self.total}] loss {loss:.5f} lr {lr:.2e} "
                f"{images_per_s:.0f} img/s eta {eta:.0f}s",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# --------------------------------------------------------------------------------------------
# One epoch.
# --------------------------------------------------------------------------------------------

def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple (CropMeta)
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batches(loader: DataLoader, steps: int):
    """`steps` batches; an iterable stream that runs dry early is started again (every rank must
    take the same number of steps or DDP's all-reduce hangs)."""
    taken = 0
    while taken < steps:
        produced = False
        for batch in loader:
            produced = True
            yield batch
            taken += 1
            if taken == steps:
                return
        if not produced:
            raise BadInput("the training data yielded no batch; check the dataset and batch_size")


def train_one_epoch(
    job: TrainJob,
    model: nn.Module,
    loader: DataLoader,
    steps: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    procs: Processes,
    epoch: int,
    writer: Any = None,
) -> EpochStats:
    """One pass of `steps` iterations. A non-finite loss prints its parts and exits 1."""
    model.train()
    use_amp = scaler.is_enabled()
    plain_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    progress = EpochProgress(epoch + 1, job.epochs, steps, procs.is_main)
    loss_sum, images = 0.0, 0
    part_sums: dict[str, float] = {}
    metric_sums: dict[str, float] = {}
    start = time.perf_counter()
    try:
        for step, batch in enumerate(_batches(loader, steps)):
            batch = _to_device(batch, device)
            inputs = batch[job.inputs_key]
            if job.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            n = int(inputs.shape[0])
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                outputs = model(inputs)
                loss, parts = job.loss_fn(outputs, batch)
            penalty = kernel_penalty(plain_model, job.regularization)
            if penalty is not None and job.regularization_factor > 0:
                reg = job.regularization_factor * penalty
                loss = loss + reg
                parts = {**parts, "regularization": reg}
            parts = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in parts.items()}
            loss_value = float(loss.item())
            if not math.isfinite(loss_value):
                # As torchvision's detection engine: stop rather than train on garbage.
                print(f"Loss is {loss_value}, stopping training (epoch {epoch + 1}, step {step + 1})", file=sys.stderr)
                print(f"loss parts: {parts}", file=sys.stderr, flush=True)
                sys.exit(1)

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            loss_sum += loss_value * n
            images += n
            for k, v in parts.items():
                part_sums[k] = part_sums.get(k, 0.0) + v * n
            if job.batch_metrics_fn is not None:
                for k, v in job.batch_metrics_fn(_detach(outputs), batch).items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + float(v) * n
            elapsed = time.perf_counter() - start
            lr = optimizer.param_groups[0]["lr"]
            progress.update(images * procs.world_size / max(elapsed, 1e-9), loss_value, lr)
            if writer is not None and (step % progress.log_every == 0):
                writer.add_scalar("train/loss_step", loss_value, epoch * steps + step + 1)  # iterations done
    finally:
        progress.close()

    seconds = time.perf_counter() - start
    totals = _sum_over_ranks([loss_sum, float(images), *part_sums.values(), *metric_sums.values()], device, procs)
    loss_total, images_total = totals[0], totals[1]
    part_values = totals[2 : 2 + len(part_sums)]
    metric_values = totals[2 + len(part_sums) :]
    return EpochStats(
        loss=loss_total / images_total,
        parts={k: v / images_total for k, v in zip(part_sums, part_values)},
        metrics={k: v / images_total for k, v in zip(metric_sums, metric_values)},
        lr=optimizer.param_groups[0]["lr"],
        images=int(images_total),
        seconds=seconds,
    )


def _detach(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_detach(o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: _detach(v) for k, v in outputs.items()}
    return outputs


def _sum_over_ranks(values: list[float], device: torch.device, procs: Processes) -> list[float]:
    if procs.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def evaluate_model(job: TrainJob, model: nn.Module) -> dict[str, float]:
    """`job.evaluate_fn` on the plain model in eval mode; back to train mode after."""
    plain = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    plain.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in job.evaluate_fn(plain).items()}
    finally:
        plain.train()


# --------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------

def run_training(job: TrainJob) -> dict[str, Any]:
    """Train `job.model` for `job.epochs`, resuming from `job.results_dir` if it holds a checkpoint.

    Returns the last epoch's metrics record (as written to metrics.jsonl) plus `best_ap`.
    """
    procs = init_processes()
    try:
        return _train(job, procs)
    finally:
        if procs.started_here and dist.is_initialized():
            dist.destroy_process_group()


def _train(job: TrainJob, procs: Processes) -> dict[str, Any]:
    results_dir = Path(job.results_dir)
    if procs.is_main:
        results_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_files(results_dir)
        if job.spec is not None and hasattr(job.spec, "model_dump"):
            save_spec(job.spec, results_dir / "spec.yaml")

    # Device.
    if job.device is not None:
        device = torch.device(job.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", procs.local_rank)
    else:
        device = torch.device("cpu")
    model = job.model.to(device)
    if job.channels_last:
        # NHWC: tensor cores want it under AMP, and oneDNN runs this repo's CPU models ~20 %
        # faster in it too (simple_pose_tiny, batch 8, one thread: 44 vs 55 ms a step).
        model = model.to(memory_format=torch.channels_last)

    # Optimizer, schedule, AMP.
    optimizer = build_optimizer(job, model)
    steps = iterations_per_epoch(job, procs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: learning_rate(job.schedule, job.lr, it / steps, job.epochs) / job.lr
    )
    use_amp = job.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # Resume at the last complete epoch.
    start_epoch, best_ap = 0, -math.inf
    last = results_dir / CHECKPOINT_LAST
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=not job.save_module)
        if ckpt.get("network") != job.network:
            raise BadInput(
                f"{last}: network: this checkpoint is a {ckpt.get('network')!r} model, not {job.network!r}; "
                "use another results directory"
            )
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if use_amp and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"])
        best_ap = float(ckpt.get("best_ap", -math.inf))
        if procs.is_main:
            print(f"resuming from {last} after epoch {start_epoch}", flush=True)

    train_model: nn.Module = model
    if procs.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[procs.local_rank] if device.type == "cuda" else None
        )

    writer = None
    records = _read_metrics(results_dir / METRICS, start_epoch) if procs.is_main else []
    if procs.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(results_dir / "tensorboard"), purge_step=start_epoch * steps + 1)
        print(
            f"training {job.network}: {job.epochs} epochs x {steps} iterations, batch {job.batch_size} "
            f"x {procs.world_size} process(es) on {device}" + (", AMP" if use_amp else ""),
            flush=True,
        )

    record: dict[str, Any] = records[-1] if records else {}
    last_plot = -math.inf
    try:
        for epoch in range(start_epoch, job.epochs):
            seed_everything(job.seed, epoch, procs.rank)
            loader = make_train_loader(job, epoch, procs)
            stats = train_one_epoch(job, train_model, loader, steps, optimizer, scheduler, scaler, device, procs, epoch, writer)
            done = epoch + 1

            val: dict[str, float] = {}
            evaluate_now = job.evaluate_fn is not None and (
                done == job.epochs or (job.eval_every > 0 and done % job.eval_every == 0)
            )
            if evaluate_now and procs.is_main:
                val = evaluate_model(job, train_model)
            improved = "AP" in val and val["AP"] > best_ap
            if improved:
                best_ap = val["AP"]

            if procs.is_main:
                record = {
                    "epoch": done,
                    "loss": stats.loss,
                    "loss_parts": stats.parts,
                    "lr": stats.lr,
                    **stats.metrics,
                    **({"val": val} if val else {}),
                    "images_per_s": stats.images / max(stats.seconds, 1e-9),
                    "seconds": stats.seconds,
                }
                records.append(record)
                write_atomic(results_dir / METRICS, "".join(json.dumps(r) + "\n" for r in records))
                _write_tensorboard(writer, record, done * steps)
                state = {
                    "epoch": done,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if use_amp else None,
                    "rng": _rng_state(),
                    "best_ap": best_ap,
                }
                if improved:
                    save_atomic(model_file(job, model, epoch=done, best_ap=best_ap), results_dir / MODEL_BEST)
                if done % job.checkpoint_every == 0:
                    save_atomic(model_file(job, model, **state), results_dir / f"checkpoint_epoch_{done:03d}.pth")
                # Last: a resume must never find a checkpoint_last newer than the files above.
                save_atomic(model_file(job, model, **state), last)
                # Redrawn each epoch, but not more often than every CURVES_EVERY_S: a plot costs
                # about a second, which would dominate epochs of a few steps.
                if val or done == job.epochs or time.monotonic() - last_plot >= CURVES_EVERY_S:
                    _plot(results_dir)
                    last_plot = time.monotonic()
                print(_epoch_line(record, job.epochs), flush=True)
            if procs.world_size > 1:
                dist.barrier()

        if procs.is_main:
            save_atomic(model_file(job, model, epoch=job.epochs, best_ap=best_ap), results_dir / MODEL_FINAL)
    finally:
        if writer is not None:
            writer.close()
    return {**record, "best_ap": best_ap if math.isfinite(best_ap) else None}


def _write_tensorboard(writer: Any, record: dict[str, Any], step: int) -> None:
    # Against the iteration, like train/loss_step, so that purge_step on resume drops both.
    for key, value in record.items():
        if key == "epoch":
            continue
        if isinstance(value, dict):
            group = "val" if key == "val" else "loss"
            for sub, v in value.items():
                writer.add_scalar(f"{group}/{sub}", v, step)
        elif isinstance(value, (int, float)):
            writer.add_scalar(f"train/{key}", value, step)
    writer.flush()


def _plot(results_dir: Path) -> None:
    from pose_workloads.render import plot_curves

    plot_curves(results_dir / METRICS, results_dir / CURVES)


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    text = f"epoch {record['epoch']}/{epochs} done: loss {record['loss']:.5f} lr {record['lr']:.2e}"
    for key, value in record.items():
        if key not in ("epoch", "loss", "lr", "loss_parts", "val", "images_per_s", "seconds") and isinstance(value, float):
            text += f" {key} {value:.3f}"
    if "val" in record:
        text += " | val " + " ".join(f"{k} {v:.3f}" for k, v in record["val"].items() if k.startswith("AP"))
    return text + f" | {record['images_per_s']:.0f} img/s, {record['seconds']:.0f}s"
