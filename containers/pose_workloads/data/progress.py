"""Progress for long data jobs: a rich bar on a terminal, plain lines otherwise (CI, docker logs)."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

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
