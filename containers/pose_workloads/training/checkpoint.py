"""Checkpoints of a training run: what is saved after each epoch and read back to resume.

Resume is exact (docs/ARCHITECTURE.md): `checkpoint_last.pth` holds the weights, optimizer,
scheduler, AMP scaler and every RNG's state after the last complete epoch, and is written last
of the epoch's files, atomically, so a resume never finds it newer than the others.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from pose_workloads import model_file
from pose_workloads.errors import BadInput
from pose_workloads.training.job import TrainJob

CHECKPOINT_LAST = "checkpoint_last.pth"


MODEL_BEST = "model_best.pth"


MODEL_FINAL = "model_final.pth"


def _model_file(job: TrainJob, model: nn.Module, **extra: Any) -> dict[str, Any]:
    """The model-file dict (model_file.contents) of the job's model, plus `extra` training state."""
    return model_file.contents(job.network, model, job.model_config, job.pose_config, job.input_size,
                               spec=job.spec, **extra)


def save_final(results_dir: Path, job: TrainJob, model: nn.Module, best_ap: float) -> None:
    model_file.write(results_dir / MODEL_FINAL, _model_file(job, model, epoch=job.epochs, best_ap=best_ap))


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal = state["python"]
    random.setstate((version, tuple(internal), None))
    # Only for devices that exist: a run resumed on fewer GPUs than it was saved on.
    for device, cuda_state in enumerate(state.get("cuda", [])[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(cuda_state, device)


def remove_stale_temp_files(results_dir: Path) -> None:
    # A process killed inside model_file.write leaves its temp file; nothing else writes `.*.tmp` here.
    for tmp in results_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


class Resumed(NamedTuple):
    epoch: int  # epochs already done
    best_ap: float  # -inf before any validation
    mid_epoch: dict[str, Any] | None = None  # a preempted run's position in epoch `epoch` (preemption.py)


def resume(path: Path, job: TrainJob, model: nn.Module, optimizer, scheduler,
           scaler: torch.amp.GradScaler) -> Resumed | None:
    """Load `path` (checkpoint_last.pth) into model, optimizer, scheduler, scaler (when enabled) and
    the RNGs; None when there is nothing to resume. A checkpoint of another network is BadInput."""
    if not path.is_file():
        # Deleted (a damaged one, say): the newest numbered checkpoint, if any, is the place to resume.
        numbered = sorted(path.parent.glob("checkpoint_epoch_[0-9][0-9][0-9]*.pth"))
        if not numbered:
            return None
        path = numbered[-1]
    try:
        ckpt = model_file.load(path)
        model_file.check_network(path, ckpt.get("network"), job.network, "use another results directory")
        model.load_state_dict(ckpt["state_dict"])
    except BadInput as err:
        raise BadInput(f"{err}; to resume, delete {path}: {_what_resumes_instead(path)}") from None
    except (KeyError, RuntimeError, TypeError, AttributeError) as err:
        raise BadInput(f"{path}: not a checkpoint of this run ({model_file._first_line(err)}); delete it to resume: "
                       f"{_what_resumes_instead(path)}") from None
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler.is_enabled() and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return Resumed(int(ckpt["epoch"]), float(ckpt.get("best_ap", -math.inf)), ckpt.get("mid_epoch"))


def _what_resumes_instead(path: Path) -> str:
    older = [p for p in sorted(path.parent.glob("checkpoint_epoch_[0-9][0-9][0-9]*.pth")) if p != path]
    if older:
        return f"training then resumes from {older[-1].name}"
    return "training then starts from scratch (no older checkpoint)"


def save_epoch(results_dir: Path, job: TrainJob, model: nn.Module, done: int, optimizer, scheduler,
               scaler: torch.amp.GradScaler, best_ap: float, improved: bool,
               mid_epoch: dict[str, Any] | None = None) -> None:
    """The files of epoch `done`: model_best.pth when validation improved, every
    `checkpoint_every` epochs a numbered checkpoint, and checkpoint_last.pth. With `mid_epoch`
    (a preempted run: `done` epochs plus part of the next), checkpoint_last.pth alone."""
    state = {
        "epoch": done,
        **({"mid_epoch": mid_epoch} if mid_epoch is not None else {}),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": rng_state(),
        "best_ap": best_ap,
    }
    if improved:
        model_file.write(results_dir / MODEL_BEST, _model_file(job, model, epoch=done, best_ap=best_ap))
    if done % job.checkpoint_every == 0 and mid_epoch is None:
        model_file.write(results_dir / f"checkpoint_epoch_{done:03d}.pth", _model_file(job, model, **state))
    # Last: a resume must never find a checkpoint_last newer than the files above.
    model_file.write(results_dir / CHECKPOINT_LAST, _model_file(job, model, **state))
