"""Shared by the benchmarks: they run as `python bench/bench_x.py`, so this imports as `timing`."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of `repeat` calls: the least disturbed by other work on the machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_cpu_rate(fn: Callable[[], object], count: int, repeat: int) -> float:
    """Items per CPU second of this process (`count` items per call), best of `repeat` calls.

    CPU time, not wall time: other work on a shared machine does not count, so the benchmark
    must run single-threaded (one DataLoader worker's view)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return count / best
