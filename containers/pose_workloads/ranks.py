"""Which process this is: torchrun's RANK / WORLD_SIZE / LOCAL_RANK, read in one place.

One process without torchrun is rank 0 of 1. Torch-free at import; `init_processes` joins the
process group when there is more than one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that prints and writes results."""
    return rank() == 0


@dataclass
class Processes:
    rank: int
    world_size: int
    local_rank: int
    started_here: bool  # this module called init_process_group, so it also tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_group_timeout():
    import datetime

    return datetime.timedelta(minutes=PROCESS_GROUP_TIMEOUT_MIN)


# NCCL's default watchdog timeout is 10 minutes: the other ranks wait in the next collective while
# rank 0 validates (COCO val2017 takes longer than that for bpnet on one GPU) and would be killed.
PROCESS_GROUP_TIMEOUT_MIN = 120


def init_processes() -> Processes:
    """torchrun's environment -> a process group (NCCL on GPU, gloo on CPU); one process without it."""
    import torch
    import torch.distributed as dist

    if world_size() <= 1:
        return Processes(0, 1, 0, False)
    started = False
    if not dist.is_initialized():
        # DDP imports torch._dynamo on first use; imported after the group exists, it keeps
        # references to it, destroy_process_group then leaves gloo's threads running, and a rank
        # that exits while a peer still talks to it could abort ("terminate called without an
        # active exception", exit -6) after a finished run. Imported first, it holds none.
        import torch._dynamo  # noqa: F401
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend, timeout=process_group_timeout())
        started = True
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank(), started)
