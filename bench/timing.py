"""Shared by the benchmarks: they run as `python bench/bench_x.py`, so this imports as `timing`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def sample_rate_arguments(doc: str, samples: int) -> argparse.Namespace:
    """The sample-rate benchmarks' command line: --samples per timed pass, --repeat passes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--samples", type=int, default=samples, help="samples per timed pass")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")
    return parser.parse_args()


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
    return interleaved_cpu_rates({"fn": fn}, count, repeat)["fn"]


def interleaved_cpu_rates(fns: dict[str, Callable[[], object]], count: int, repeat: int) -> dict[str, float]:
    """`best_cpu_rate` of several functions timed in alternating rounds, so that a shared
    machine's slow and quiet spells fall on all of them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    return {name: count / seconds for name, seconds in best.items()}
