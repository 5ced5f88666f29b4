"""Progress of long jobs: a rich bar on a terminal, plain lines otherwise (CI, docker logs: a log
file must not fill up with carriage returns).

`Progress` is the one display; `track` wraps an iterable with it (conversion, evaluation,
calibration) and `EpochProgress` is told each training step's rate, loss and learning rate."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Progress:
    """`total` steps titled `title`: on a TTY a rich bar with ETA (and `fields`, a rich format of
    the values passed to `advance`, e.g. "{task.fields[loss]:.5f}"); otherwise `line(done,
    elapsed_s, **values)` printed at every 10 % and at the end. Shows nothing when not `enabled`."""

    def __init__(self, total: int, title: str, line: Callable[..., str], enabled: bool = True,
                 fields: str = "", **initial: Any):
        self.total, self.line, self.enabled = total, line, enabled
        self.done = 0
        self.start = time.perf_counter()
        self.log_every = max(1, total // 10)
        self.bar = None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            columns = [TextColumn(title), BarColumn(), MofNCompleteColumn()]
            if fields:
                columns.append(TextColumn(fields))
            self.bar = RichProgress(*columns, TimeRemainingColumn())
            self.task = self.bar.add_task(title, total=total, **initial)
            self.bar.start()

    def advance(self, **values: Any) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, advance=1, **values)
        elif self.done % self.log_every == 0 or self.done == self.total:
            print(self.line(self.done, time.perf_counter() - self.start, **values), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def track(items: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Yield `items` while showing how far along they are (rate and ETA)."""

    def line(done: int, elapsed: float) -> str:
        return f"{description}: {done}/{total} ({done / max(elapsed, 1e-9):.1f}/s)"

    progress = Progress(total, description, line, enabled)
    try:
        for item in items:
            yield item
            progress.advance()
    finally:
        progress.close()


class EpochProgress(Progress):
    """Shows images/s, loss and ETA while an epoch runs. Silent on ranks other than 0."""

    def __init__(self, epoch: int, epochs: int, total: int, enabled: bool):
        def line(done: int, elapsed: float, images_per_s: float, loss: float, lr: float) -> str:
            eta = elapsed / done * (total - done)
            return (f"epoch {epoch}/{epochs} [{done}/{total}] loss {loss:.5f} lr {lr:.2e} "
                    f"{images_per_s:.0f} img/s eta {eta:.0f}s")

        super().__init__(total, f"epoch {epoch}/{epochs}", line, enabled,
                         fields="{task.fields[images_per_s]:.0f} img/s  loss {task.fields[loss]:.5f}",
                         images_per_s=0.0, loss=float("nan"), lr=0.0)

    def update(self, images_per_s: float, loss: float, lr: float) -> None:
        self.advance(images_per_s=images_per_s, loss=loss, lr=lr)
