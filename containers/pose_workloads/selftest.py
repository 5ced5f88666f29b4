"""`python -m pose_workloads selftest`: a smoke test of the runners and of distributed start-up.

Each process joins the process group (gloo on CPU, NCCL on GPU), all-reduces its rank + 1 and
prints what it saw. Under `torchrun --nproc_per_node N` every rank prints RANK and
WORLD_SIZE=N; alone it runs as rank 0 of 1. `--fail_rank R` makes rank R exit 3 (to test that a
failed rank's exit code reaches `pose`), `--hold_s S` keeps the ranks alive S seconds (to test
Ctrl-C). CI runs it in the real image.
"""

from __future__ import annotations

import time

from pose_workloads import ranks


def main(args) -> int:
    import torch
    import torch.distributed as dist

    rank, world_size, local_rank = ranks.rank(), ranks.world_size(), ranks.local_rank()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        # Before the process group: NCCL binds each rank to the current device, and without this
        # every rank of a node would share GPU 0.
        torch.cuda.set_device(local_rank)
    if world_size > 1:
        dist.init_process_group(backend, timeout=ranks.process_group_timeout())  # env:// from torchrun
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    value = torch.tensor([rank + 1.0], device=device)
    dist.all_reduce(value)
    expected = world_size * (world_size + 1) / 2
    ok = value.item() == expected
    print(
        f"selftest: RANK={rank} WORLD_SIZE={world_size} LOCAL_RANK={local_rank} backend={backend} "
        f"all_reduce={value.item():g} expected={expected:g} {'ok' if ok else 'MISMATCH'}",
        flush=True,
    )
    try:
        if getattr(args, "hold_s", None):
            print(f"selftest: RANK={rank} holding {args.hold_s:g} s", flush=True)
            time.sleep(args.hold_s)
        if args.fail_rank is not None and args.fail_rank == rank:
            print(f"selftest: RANK={rank} failing on purpose (--fail_rank {rank})", flush=True)
            return 3
        return 0 if ok else 1
    finally:
        dist.destroy_process_group()
