"""Preemption-safe training: a stop request ends the run at the next step boundary with a step
checkpoint, and the next run resumes mid-epoch as if nothing had happened.

SIGTERM (Kubernetes eviction, `docker stop`, `scancel`, spot reclaim) or SIGUSR1 (Slurm's
`--signal=B:USR1@<grace>` warning, forwarded as SIGTERM to the ranks by the batch script) is
noted, not acted on, while a step runs. After each step every rank asks whether any rank was
asked to stop (one all-reduce of a flag, so they all stop after the same step), rank 0 writes
`checkpoint_last.pth` with the position inside the epoch (atomically, as every checkpoint), and
the run ends with `Preempted`: exit code 75 (`exit_codes.PREEMPTED`; a torchrun that was itself
signalled exits 128 + N instead). The Slurm runner requeues such a job; any rerun resumes.

What makes the resumed run end with the same weights (docs/ARCHITECTURE.md, exact resume): the
checkpoint holds model, optimizer, scheduler, AMP scaler, the epoch, the step, the epoch's loss
sums so far, and every rank's RNG states at the step boundary. The resumed epoch is reseeded and
its loader rebuilt as usual (its order is a function of seed, epoch and rank), the first `step`
batches are drawn and dropped, and only then are the RNG states put back, so that batch
`step` is drawn from the same state as in an uninterrupted run. Resuming with another number of
ranks skips the same number of samples instead (not exact: the sampler shards differ).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from pose_workloads.errors import TaskFailed
from pose_workloads.exit_codes import PREEMPTED
from pose_workloads.ranks import Processes
from pose_workloads.training.checkpoint import rng_state, set_rng_state

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(TaskFailed):
    """Training stopped on request after writing a step checkpoint; run it again to resume."""

    exit_code = PREEMPTED


class StopRequests:
    """While inside: SIGTERM and SIGUSR1 are noted (first one wins) instead of ending the process.

    `agreed()` is the step-boundary question every rank asks; a second signal changes nothing
    (the runners kill a task that outlives their grace period)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        self._previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._note)
        return self

    def _note(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            print(f"{signal.Signals(signum).name} received: stopping at the next step boundary with a checkpoint",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def agreed(self, device: torch.device, procs: Processes) -> bool:
        """Whether any rank has been asked to stop. Every rank must call this after the same step."""
        if procs.world_size == 1:
            return self.signum is not None
        flag = torch.tensor([0.0 if self.signum is None else 1.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def rng_states_of_all_ranks(procs: Processes) -> list[dict[str, Any]]:
    """Every rank's RNG states, on every rank (rank 0 saves them). A collective: all ranks call it."""
    mine = rng_state()
    if procs.world_size == 1:
        return [mine]
    gathered: list[Any] = [None] * procs.world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def position(saved: dict[str, Any], procs: Processes, batch_size: int) -> int:
    """The step to resume at in the saved epoch: the saved step with the same number of ranks,
    else the step that has seen as many samples."""
    step, world = int(saved["step"]), int(saved["world_size"])
    if world == procs.world_size:
        return step
    skipped = step * world // procs.world_size
    if procs.is_main:
        print(f"resuming mid-epoch with {procs.world_size} rank(s) instead of {world}: skipping {skipped} step(s) "
              "(the same number of samples; not bit-exact)", flush=True)
    return skipped


def resume_batches(batches: Iterator[Any], skip: int, saved: dict[str, Any] | None, procs: Processes) -> Iterator[Any]:
    """`batches` after dropping the first `skip`, with this rank's RNG states put back just before
    the next one is drawn (as they were at the step boundary)."""
    for _ in range(skip):
        next(batches)
    if saved is not None:
        states = saved["rng"]
        if len(states) == procs.world_size:
            set_rng_state(states[procs.rank])
    yield from batches
