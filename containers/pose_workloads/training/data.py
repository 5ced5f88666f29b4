"""The epoch's data: seeds, the loader (its order a function of seed, epoch and rank only), the
number of steps, and batches moved to the device."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from pose_workloads.errors import BadInput
from pose_workloads.ranks import Processes
from pose_workloads.training.job import TrainJob


def seed_everything(seed: int, epoch: int = 0, rank: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from (seed, epoch, rank)."""
    mixed = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    random.seed(mixed)
    np.random.seed(mixed)
    torch.manual_seed(mixed)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator (base_seed + worker_id); NumPy and
    # Python are not, so a worker would otherwise repeat its parent's NumPy stream.
    # https://pytorch.org/docs/stable/notes/randomness.html#dataloader
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class _EveryNth(IterableDataset):
    """Items rank, rank + world_size, ... of a stream: rank sharding for IterableDatasets."""

    def __init__(self, dataset: IterableDataset, rank: int, world_size: int):
        self.dataset, self.rank, self.world_size = dataset, rank, world_size

    def __iter__(self):
        for i, item in enumerate(self.dataset):
            if i % self.world_size == self.rank:
                yield item


def make_train_loader(job: TrainJob, epoch: int, procs: Processes) -> DataLoader:
    """The epoch's loader. Its order is a function of (seed, epoch, rank) only."""
    dataset = job.train_dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([job.seed, epoch, procs.rank, 1]).generate_state(1)[0]))
    common = dict(
        batch_size=job.batch_size,
        num_workers=job.workers,
        collate_fn=job.collate,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_seed_worker,
        generator=generator,
        # Fresh workers each epoch: they must see this epoch's set_epoch and seeds.
        persistent_workers=False,
    )
    if isinstance(dataset, IterableDataset):
        if procs.world_size > 1 and not getattr(dataset, "shards_by_rank", False):
            dataset = _EveryNth(dataset, procs.rank, procs.world_size)
        return DataLoader(dataset, **common)
    # DistributedSampler also with one process: one code path, order = permutation(seed + epoch).
    sampler = DistributedSampler(dataset, num_replicas=procs.world_size, rank=procs.rank, shuffle=True, seed=job.seed)
    sampler.set_epoch(epoch)
    # Drop the ragged last batch as GluonCV (last_batch='discard'), unless that leaves nothing.
    return DataLoader(dataset, sampler=sampler, drop_last=len(sampler) >= job.batch_size, **common)


def iterations_per_epoch(job: TrainJob, procs: Processes) -> int:
    if isinstance(job.train_dataset, IterableDataset):
        if not job.steps_per_epoch:
            raise ValueError("an IterableDataset needs TrainJob.steps_per_epoch (it has no length)")
        return job.steps_per_epoch
    per_rank = math.ceil(len(job.train_dataset) / procs.world_size)
    if per_rank == 0:
        raise BadInput("the training set is empty; check the annotation file and the image folder")
    return per_rank // job.batch_size if per_rank >= job.batch_size else 1


def batches(loader: DataLoader, steps: int):
    """`steps` batches; an iterable stream that runs dry early is started again (every rank must
    take the same number of steps or DDP's all-reduce hangs)."""
    taken = 0
    while taken < steps:
        produced = False
        for batch in loader:
            produced = True
            yield batch
            taken += 1
            if taken == steps:
                return
        if not produced:
            raise BadInput("the training data yielded no batch; check the dataset and batch_size")


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple (CropMeta)
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
