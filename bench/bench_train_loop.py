"""Training-loop overhead: `run_training` against a bare forward/backward/step loop.

    python bench/bench_train_loop.py [--epochs 2] [--steps 96] [--repeat 2]

Both train the same tiny Simple Pose model (simple_pose_tiny, 128x96 crops, batch 8, Adam,
channels-last) from the same initial weights on the same in-memory batches, through the loop's own
DataLoader and optimizer (no workers: data loading is not what is measured), on the CPU with one
thread. `run_training` adds
everything around the step: the loss-part and heatmap-accuracy bookkeeping, the progress line,
TensorBoard scalars, metrics.jsonl, the learning-rate schedule, the preemption check, a checkpoint
every epoch and the curves plot at the end. The bare loop is
`for batch in loader: loss = loss_fn(model(x), batch); zero_grad; backward; step`.
The loop's time runs from the first epoch's start to the last epoch's checkpoint; what happens
once per run whatever its length (TensorBoard and folder set-up, the final model file and curves)
is printed apart. The script fails when the overhead is above MAX_OVERHEAD (issue 11: 5 %).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from pose_workloads.models import build_model  # noqa: E402
from pose_workloads.ranks import init_processes  # noqa: E402
from pose_workloads.simple_pose.train import _batch_accuracy, heatmap_loss  # noqa: E402
from pose_workloads.specs import COCO17  # noqa: E402
from pose_workloads.training import loop  # noqa: E402
from pose_workloads.training.data import make_train_loader  # noqa: E402
from pose_workloads.training.job import Schedule, TrainJob  # noqa: E402
from pose_workloads.training.loop import run_training  # noqa: E402
from pose_workloads.training.optim import build_optimizer  # noqa: E402

INPUT = (128, 96)
BATCH = 8
MAX_OVERHEAD = 0.05


class Batches(Dataset):
    """Fixed random crops and Gaussian-ish targets, as TopDownDataset's samples."""

    def __init__(self, count: int):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(count, 3, *INPUT, generator=generator)
        self.targets = torch.rand(count, COCO17.num_joints, INPUT[0] // 4, INPUT[1] // 4, generator=generator) ** 8
        self.weights = torch.ones(count, COCO17.num_joints, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "target": self.targets[i], "target_weight": self.weights[i]}


def make_job(model: torch.nn.Module, dataset: Dataset, epochs: int, results_dir: Path) -> TrainJob:
    return TrainJob(
        network="simple-pose", model=model, model_config={"name": "simple_pose_tiny"}, pose_config=COCO17,
        input_size=INPUT, train_dataset=dataset, loss_fn=heatmap_loss, results_dir=results_dir,
        epochs=epochs, batch_size=BATCH, lr=1e-3, optimizer="adam", schedule=Schedule(kind="step", steps=(2,)),
        batch_metrics_fn=_batch_accuracy, checkpoint_every=1, workers=0, seed=0, amp=False,
        channels_last=True, device="cpu",
    )


def bare(model: torch.nn.Module, dataset: Dataset, epochs: int) -> float:
    """The same loader and optimizer as run_training's (training/data.py, optim.py), nothing else."""
    job = make_job(model, dataset, epochs, Path("unused"))
    procs = init_processes()
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(job, model)
    start = time.perf_counter()
    for epoch in range(epochs):
        for batch in make_train_loader(job, epoch, procs):
            inputs = batch["image"].contiguous(memory_format=torch.channels_last)
            loss, _ = heatmap_loss(model(inputs), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def full(model: torch.nn.Module, dataset: Dataset, epochs: int) -> tuple[float, float]:
    """(seconds from the first epoch's start to the last epoch's checkpoint, seconds of the whole
    call): the first is what grows with training, the rest is once per run (TensorBoard and
    results-folder set-up, the final model and curves)."""
    marks: list[float] = []
    make_loader, save_final = loop.make_train_loader, loop.save_final

    def mark_loader(*a, **kw):
        marks.append(time.perf_counter()) if not marks else None
        return make_loader(*a, **kw)

    def mark_final(*a, **kw):
        marks.append(time.perf_counter())
        return save_final(*a, **kw)

    loop.make_train_loader, loop.save_final = mark_loader, mark_final
    try:
        with tempfile.TemporaryDirectory() as tmp:
            job = make_job(model, dataset, epochs, Path(tmp) / "run")
            start = time.perf_counter()
            run_training(job)
            end = time.perf_counter()
    finally:
        loop.make_train_loader, loop.save_final = make_loader, save_final
    return marks[1] - marks[0], end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=96, help="steps per epoch")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each; the fastest is kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.pop("WORLD_SIZE", None)

    torch.manual_seed(0)
    initial = build_model("simple-pose", {"name": "simple_pose_tiny"}, COCO17.num_joints, pretrained=False)
    dataset = Batches(args.steps * BATCH)
    bare(copy.deepcopy(initial), dataset, 1)  # warm-up: oneDNN kernels, allocator
    bare_s, full_s, whole_s = [], [], []
    for _ in range(args.repeat):
        bare_s.append(bare(copy.deepcopy(initial), dataset, args.epochs))
        span, whole = full(copy.deepcopy(initial), dataset, args.epochs)
        full_s.append(span)
        whole_s.append(whole - span)
    overhead = min(full_s) / min(bare_s) - 1
    steps = args.epochs * args.steps
    print(f"simple_pose_tiny {INPUT[0]}x{INPUT[1]}, batch {BATCH}, {args.epochs} epochs x {args.steps} steps, "
          "CPU, 1 thread")
    print(f"  bare forward/backward/step loop  {min(bare_s):7.2f} s  ({min(bare_s) / steps * 1e3:6.1f} ms/step)")
    print(f"  run_training, epochs             {min(full_s):7.2f} s  ({min(full_s) / steps * 1e3:6.1f} ms/step, "
          "with per-step logging, progress, metrics and per-epoch checkpoints, metrics.jsonl, TensorBoard, curves)")
    print(f"  overhead                          {overhead:+7.1%}")
    print(f"  once per run (set-up, final model and curves): {min(whole_s):.2f} s")
    assert overhead <= MAX_OVERHEAD, f"training-loop overhead {overhead:.1%} is above {MAX_OVERHEAD:.0%}"


if __name__ == "__main__":
    main()
