"""The one training loop, for Simple Pose and BodyPoseNet.

Read in run order, like torchvision's references/classification/train.py: `run_training(job)`
sets up processes, device, optimizer, schedule and resume, then loops over `train_one_epoch()`,
evaluating and checkpointing between epochs. The package docstring says what is reproducible and
what the results directory holds.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from pose_workloads.errors import TaskFailed
from pose_workloads.progress import EpochProgress
from pose_workloads.ranks import Processes, init_processes
from pose_workloads.specs import save_spec
from pose_workloads.training.checkpoint import CHECKPOINT_LAST, remove_stale_temp_files, resume, save_epoch, save_final
from pose_workloads.training.data import batches, iterations_per_epoch, make_train_loader, seed_everything, to_device
from pose_workloads.training.job import TrainJob
from pose_workloads.training.metrics import MetricsLog, epoch_line
from pose_workloads.training.optim import build_optimizer, kernel_penalty, learning_rate
from pose_workloads.training.preemption import (
    Preempted,
    StopRequests,
    position,
    resume_batches,
    rng_states_of_all_ranks,
)


class NonFiniteLoss(TaskFailed):
    """The loss became NaN or infinite: as torchvision's detection engine, stop rather than train
    on garbage. The message names the epoch, the step and every loss part (exit 1)."""


@dataclass
class EpochStats:
    """What one pass over the training data measured (already averaged over ranks)."""

    loss: float
    parts: dict[str, float]
    metrics: dict[str, float]
    lr: float
    images: int
    seconds: float
    # Preempted after this many steps of the epoch: the sums so far, unaveraged (not yet over ranks).
    stopped_after: int | None = None
    sums: dict[str, Any] | None = None


class AmpSettings(NamedTuple):
    enabled: bool
    dtype: torch.dtype
    loss_scaling: bool  # float16 only: bfloat16 has float32's exponent range


def amp_settings(job: TrainJob, device: torch.device) -> AmpSettings:
    """Mixed precision on CUDA when the job asks for it, in its amp_dtype."""
    if job.amp_dtype not in ("float16", "bfloat16"):
        raise ValueError(f"amp_dtype {job.amp_dtype!r}: use float16 or bfloat16")
    enabled = job.amp and device.type == "cuda"
    dtype = torch.bfloat16 if job.amp_dtype == "bfloat16" else torch.float16
    return AmpSettings(enabled, dtype, enabled and dtype == torch.float16)


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
    stop: StopRequests | None = None,
    resumed: dict[str, Any] | None = None,
    start_step: int = 0,
) -> EpochStats:
    """One pass of `steps` iterations, from `start_step` on (a preempted epoch, whose sums so far
    and RNG states are `resumed`). A stop request agreed after a step ends the pass early
    (`stopped_after`). A non-finite loss raises NonFiniteLoss naming its parts."""
    train_mode(model, job.freeze_batchnorm)
    amp = amp_settings(job, device)
    plain_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    progress = EpochProgress(epoch + 1, job.epochs, steps, procs.is_main)
    sums = dict(resumed["sums"][procs.rank]) if resumed and len(resumed["sums"]) == procs.world_size else {}
    loss_sum, images = sums.get("loss", 0.0), int(sums.get("images", 0))
    part_sums: dict[str, float] = dict(sums.get("parts", {}))
    metric_sums: dict[str, float] = dict(sums.get("metrics", {}))
    start = time.perf_counter() - sums.get("seconds", 0.0)
    stopped_after = None
    try:
        for step, batch in enumerate(resume_batches(batches(loader, steps), start_step, resumed, procs),
                                     start=start_step):
            batch = to_device(batch, device)
            inputs = batch[job.inputs_key]
            if job.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            n = int(inputs.shape[0])
            with torch.autocast(device_type=device.type, dtype=amp.dtype, enabled=amp.enabled):
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
                raise NonFiniteLoss(f"Loss is {loss_value}, stopping training (epoch {epoch + 1}, step {step + 1}); "
                                    f"loss parts: {parts}")

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
            if stop is not None and step + 1 < steps and stop.agreed(device, procs):
                stopped_after = step + 1
                break
    finally:
        progress.close()

    seconds = time.perf_counter() - start
    if stopped_after is not None:
        mine = {"loss": loss_sum, "images": images, "parts": part_sums, "metrics": metric_sums, "seconds": seconds}
        return EpochStats(0.0, {}, {}, optimizer.param_groups[0]["lr"], images, seconds, stopped_after,
                          {"mine": mine})
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


def train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    """model.train(); with freeze_batchnorm its BatchNorm layers stay in eval mode: they normalise
    with their running statistics and leave them unchanged, so a rank's batch size no longer
    matters. Their weight and bias still train (per channel, averaged by DDP like any parameter),
    and the state_dict keeps its keys."""
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def evaluate_model(job: TrainJob, model: nn.Module) -> dict[str, float]:
    """`job.evaluate_fn` on the plain model in eval mode; back to train mode after."""
    plain = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    plain.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in job.evaluate_fn(plain).items()}
    finally:
        train_mode(plain, job.freeze_batchnorm)


def run_training(job: TrainJob) -> dict[str, Any]:
    """Train `job.model` for `job.epochs`, resuming from `job.results_dir` if it holds a checkpoint.

    Returns the last epoch's metrics record (as written to metrics.jsonl) plus `best_ap`.
    """
    procs = init_processes()
    try:
        with StopRequests() as stop:
            return _train(job, procs, stop)
    finally:
        if procs.started_here and dist.is_initialized():
            # The DDP wrapper can sit in a reference cycle; collected first, destroy_process_group
            # ends gloo's threads instead of leaving them to race the interpreter's exit
            # (see ranks.init_processes).
            gc.collect()
            dist.destroy_process_group()



def _device(job: TrainJob, procs: Processes) -> torch.device:
    if job.device is not None:
        return torch.device(job.device)
    if torch.cuda.is_available():
        return torch.device("cuda", procs.local_rank)
    return torch.device("cpu")


def _train(job: TrainJob, procs: Processes, stop: StopRequests | None = None) -> dict[str, Any]:
    results_dir = Path(job.results_dir)
    if procs.is_main:
        results_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(results_dir)
        if job.spec is not None and hasattr(job.spec, "model_dump"):
            save_spec(job.spec, results_dir / "spec.yaml")

    device = _device(job, procs)
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
    amp = amp_settings(job, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp.loss_scaling)

    # Resume at the last complete epoch.
    last = results_dir / CHECKPOINT_LAST
    resumed = resume(last, job, model, optimizer, scheduler, scaler)
    start_epoch, best_ap = (resumed.epoch, resumed.best_ap) if resumed else (0, -math.inf)
    mid_epoch = resumed.mid_epoch if resumed else None
    start_step = position(mid_epoch, procs, job.batch_size) if mid_epoch else 0
    if resumed and procs.is_main:
        within = f", step {start_step} of epoch {start_epoch + 1}" if mid_epoch else ""
        print(f"resuming from {last} after epoch {start_epoch}{within}", flush=True)

    train_model: nn.Module = model
    if procs.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[procs.local_rank] if device.type == "cuda" else None
        )

    log = None
    if procs.is_main:
        log = MetricsLog(results_dir, start_epoch, purge_step=start_epoch * steps + start_step + 1)
        print(
            f"training {job.network}: {job.epochs} epochs x {steps} iterations, batch {job.batch_size} "
            f"x {procs.world_size} process(es) on {device}" + (f", AMP {job.amp_dtype}" if amp.enabled else ""),
            flush=True,
        )

    record: dict[str, Any] = log.records[-1] if log and log.records else {}
    try:
        for epoch in range(start_epoch, job.epochs):
            seed_everything(job.seed, epoch, procs.rank)
            loader = make_train_loader(job, epoch, procs)
            writer = log.writer if log else None
            stats = train_one_epoch(job, train_model, loader, steps, optimizer, scheduler, scaler, device, procs, epoch,
                                    writer, stop, mid_epoch if epoch == start_epoch else None,
                                    start_step if epoch == start_epoch else 0)
            if stats.stopped_after is not None:
                _stop_mid_epoch(job, results_dir, model, epoch, stats, optimizer, scheduler, scaler, best_ap, procs)
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

            if log is not None:
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
                log.add(record, done * steps)
                save_epoch(results_dir, job, model, done, optimizer, scheduler, scaler, best_ap, improved)
                log.plot(now=bool(val))  # and the final curves after the final model
                print(epoch_line(record, job.epochs), flush=True)
            if procs.world_size > 1:
                dist.barrier()
            if stop is not None and done < job.epochs and stop.agreed(device, procs):
                raise Preempted(f"stopped on request after epoch {done}; checkpoint_last.pth holds it: "
                                "run the same command again to resume")

        if procs.is_main:
            save_final(results_dir, job, model, best_ap)
            if log is not None and log.records:
                log.plot(now=True)
    finally:
        if log is not None:
            log.close()
    return {**record, "best_ap": best_ap if math.isfinite(best_ap) else None}


def _stop_mid_epoch(job: TrainJob, results_dir: Path, model: nn.Module, epoch: int, stats: EpochStats, optimizer,
                    scheduler, scaler, best_ap: float, procs: Processes) -> None:
    """Every rank: gather the RNG states and the epoch's sums; rank 0 writes the step checkpoint;
    then all raise Preempted together (a rank leaving early would kill the others' collectives)."""
    states = rng_states_of_all_ranks(procs)
    sums = [stats.sums["mine"]]
    if procs.world_size > 1:
        sums = [None] * procs.world_size
        dist.all_gather_object(sums, stats.sums["mine"])
    if procs.is_main:
        mid_epoch = {"step": stats.stopped_after, "world_size": procs.world_size, "rng": states, "sums": sums}
        save_epoch(results_dir, job, model, epoch, optimizer, scheduler, scaler, best_ap, False, mid_epoch)
    if procs.world_size > 1:
        dist.barrier()
    raise Preempted(f"stopped on request at step {stats.stopped_after} of epoch {epoch + 1}; checkpoint_last.pth "
                    "holds it: run the same command again to resume")
