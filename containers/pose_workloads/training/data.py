"""The epoch's data: seeds, the loader (its order a function of seed, epoch and rank only), the
number of steps, and batches moved to the device."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, Sampler

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


class ImageGroupedSampler(Sampler[int]):
    """A shuffled epoch with each image's samples one after another, for a top-down dataset.

    Every epoch a fresh order of images (a function of seed and epoch) with each image's samples in
    dataset order; rank r takes batches r, r + world_size, ... of it, so the ranks' batches of a
    step together are the batch one process of world_size x batch_size would take (as with
    DistributedSampler). The epoch is padded to whole steps by repeating its start.

    An image's samples then land in one batch (or two), so one data worker, whose cache of decoded
    images decodes the image once for all its people: a top-down sample's decode is most of its
    cost. The price: batches hold the people of fewer images (README, "Top-down samples").
    """

    def __init__(self, groups: Sequence[Hashable], num_replicas: int, rank: int, seed: int, batch_size: int):
        """groups: one key per sample (its image); samples with equal keys stay together."""
        members: dict[Hashable, list[int]] = {}
        for index, key in enumerate(groups):
            members.setdefault(key, []).append(index)
        self.members = list(members.values())
        step = num_replicas * batch_size
        self.total = math.ceil(len(groups) / step) * step
        self.num_replicas, self.rank, self.seed, self.batch_size, self.epoch = num_replicas, rank, seed, batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        images = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.members))
        order = [index for image in images.tolist() for index in self.members[image]]
        order = (order * math.ceil(self.total / max(len(order), 1)))[: self.total]
        step, size = self.num_replicas * self.batch_size, self.batch_size
        return (index for start in range(self.rank * size, self.total, step) for index in order[start:start + size])

    def __len__(self) -> int:
        return self.total // self.num_replicas


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
    if job.sample_groups is not None:
        sampler = ImageGroupedSampler(job.sample_groups, procs.world_size, procs.rank, job.seed, job.batch_size)
    else:  # also with one process: one code path, order = permutation(seed + epoch)
        sampler = DistributedSampler(dataset, num_replicas=procs.world_size, rank=procs.rank, shuffle=True,
                                     seed=job.seed)
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
