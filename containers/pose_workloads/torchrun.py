"""`python -m pose_workloads.torchrun ...`: torchrun, but exiting with the failed rank's own code.

torchrun exits 1 whichever way a rank failed, so a bad spec (2) or a rank that ran out of
memory looks the same to `pose` and to a scheduler. This runs torchrun's own `run()` (same
flags, same agent) and, when a rank fails, exits with the exit code of the first rank that
failed (128 + N for a rank killed by signal N, as a shell reports it). A stop signal to torchrun
itself (SIGINT, SIGTERM, SIGHUP) exits 128 + its number once the ranks are stopped.
"""

from __future__ import annotations

import signal
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def exit_code_of(returncode: int) -> int:
    """A process's exit status as a shell reports it: -N (killed by signal N) -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGUSR1 is Slurm's preemption warning, delivered to every process of the step: torchrun
    # must outlive it (its default action ends the process) while the ranks, which inherit the
    # ignored disposition and install their own handler when training, checkpoint and stop.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        run(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = exit_code_of(failure.exitcode)
        print(f"torchrun: rank {rank} failed first, exit code {code}", file=sys.stderr, flush=True)
        return code or 1
    except SignalException as err:
        return 128 + int(err.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
