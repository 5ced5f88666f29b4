"""Progress of long jobs: a rich bar on a terminal, plain lines otherwise (CI, docker logs: a log
file must not fill up with carriage returns).

`track` wraps an iterable (conversion, evaluation, calibration); `EpochProgress` is told each
training step's rate, loss and learning rate."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(items: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Yield `items` while showing how far along they are.

    On a TTY: a rich progress bar with rate and ETA. Otherwise: one line per 10 % (a log file must
    not fill up with carriage returns). `enabled=False` shows nothing.
    """
    if not enabled:
        yield from items
        return
    if sys.stdout.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns) as bar:
            yield from bar.track(items, total=total)
        return
    start = time.perf_counter()
    every = max(1, total // 10)
    done = 0
    for item in items:
        yield item
        done += 1
        if done % every == 0 or done == total:
            elapsed = time.perf_counter() - start
            print(f"{description}: {done}/{total} ({done / max(elapsed, 1e-9):.1f}/s)", flush=True)


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
