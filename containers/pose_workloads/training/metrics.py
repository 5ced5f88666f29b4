"""What a training run reports per epoch: metrics.jsonl, TensorBoard scalars, curves.png and the
epoch line on stdout (rank 0 only)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pose_workloads.files import write_atomic

METRICS = "metrics.jsonl"


CURVES = "curves.png"


CURVES_EVERY_S = 15.0


class MetricsLog:
    """The run's per-epoch records, kept in metrics.jsonl (rewritten whole, atomically) and
    TensorBoard; curves.png redrawn at most every CURVES_EVERY_S seconds."""

    def __init__(self, results_dir: Path, start_epoch: int, purge_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.results_dir = results_dir
        # A resumed run forgets what was logged after its checkpoint.
        self.records = _read_metrics(results_dir / METRICS, start_epoch)
        self.writer = SummaryWriter(str(results_dir / "tensorboard"), purge_step=purge_step)
        # The first curves come after CURVES_EVERY_S, or at an evaluation, or at close.
        self.last_plot = time.monotonic()

    def add(self, record: dict[str, Any], step: int) -> None:
        self.records.append(record)
        write_atomic(self.results_dir / METRICS, "".join(json.dumps(r) + "\n" for r in self.records))
        _write_tensorboard(self.writer, record, step)

    def plot(self, now: bool) -> None:
        """Redraw curves.png when `now`, else not more often than every CURVES_EVERY_S: a plot
        costs about a second, which would dominate epochs of a few steps."""
        if now or time.monotonic() - self.last_plot >= CURVES_EVERY_S:
            from pose_workloads.render import plot_curves

            plot_curves(self.results_dir / METRICS, self.results_dir / CURVES)
            self.last_plot = time.monotonic()

    def close(self) -> None:
        self.writer.close()


def _read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("epoch", 0) <= up_to_epoch]


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


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    text = f"epoch {record['epoch']}/{epochs} done: loss {record['loss']:.5f} lr {record['lr']:.2e}"
    for key, value in record.items():
        bookkeeping = ("epoch", "loss", "lr", "loss_parts", "val", "images_per_s", "seconds")
        if key not in bookkeeping and isinstance(value, float):
            text += f" {key} {value:.3f}"
    if "val" in record:
        text += " | val " + " ".join(f"{k} {v:.3f}" for k, v in record["val"].items() if k.startswith("AP"))
    return text + f" | {record['images_per_s']:.0f} img/s, {record['seconds']:.0f}s"
