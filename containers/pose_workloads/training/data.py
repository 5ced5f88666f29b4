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
    """A shuffled epoch in which each data worker draws its batches from a few images it keeps
    decoded, one person of each image per batch, for a top-down dataset.

    Every epoch a fresh order of images and of each image's people (a function of seed and
    epoch); rank r takes images r, r + world_size, ...; and they are dealt to `lanes` lanes (lane
    w: the DataLoader worker that gets batches w, w + lanes, ...). A lane keeps batch_size slots,
    each holding an image with people left, and each of its batches takes one person from every
    slot; a slot whose image runs out takes the lane's next image, in place. So a batch holds
    people of batch_size images, as a uniformly shuffled one does, and a worker whose
    decoded-image cache holds batch_size images (least recently used out) decodes each of its
    images once an epoch. Where images run short (an epoch's end, a small dataset) a batch takes
    several people of an image.

    Each rank yields ceil(n / world_size) samples: its share cut, or padded by repeating its start.
    """

    def __init__(self, groups: Sequence[Hashable], num_replicas: int, rank: int, seed: int, batch_size: int,
                 lanes: int = 1):
        """groups: one key per sample (its image). lanes: the DataLoader's workers (0 counts as 1)."""
        members: dict[Hashable, list[int]] = {}
        for index, key in enumerate(groups):
            members.setdefault(key, []).append(index)
        self.members = list(members.values())
        self.num_samples = math.ceil(len(groups) / num_replicas)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.batch_size, self.lanes = batch_size, max(lanes, 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _lane_batches(self, images: list[int], rng: np.random.Generator) -> list[list[int]]:
        pending = iter(images)
        slots: list[list[int]] = []  # the people left of each slot's image, in a random order; [] = free
        stream: list[int] = []
        while True:
            for position, people in enumerate(slots):
                if not people and (image := next(pending, None)) is not None:
                    slots[position] = rng.permutation(self.members[image]).tolist()  # in place: the cache
                    # evicts the image this slot held, the least recently used
            while len(slots) < self.batch_size and (image := next(pending, None)) is not None:
                slots.append(rng.permutation(self.members[image]).tolist())
            if not any(slots):
                return [stream[i:i + self.batch_size] for i in range(0, len(stream), self.batch_size)]
            stream += [people.pop() for people in slots if people]

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        images = rng.permutation(len(self.members))
        mine = images[self.rank::self.num_replicas].tolist()
        # A lane needs batch_size images to fill its batches: a small dataset gets fewer lanes.
        # Each image goes to the lane with the fewest people so far, so that lanes end within an
        # image of each other and nearly every batch reaches the worker that keeps its images.
        lanes = max(1, min(self.lanes, len(mine) // self.batch_size))
        lane_images: list[list[int]] = [[] for _ in range(lanes)]
        lane_people = [0] * lanes
        for image in mine:
            lane = lane_people.index(min(lane_people))
            lane_images[lane].append(image)
            lane_people[lane] += len(self.members[image])
        lane_batches = [self._lane_batches(chosen, rng) for chosen in lane_images]
        # Batch k goes to worker k % lanes while every lane has full batches; the rest follow.
        order: list[int] = []
        turns = 0
        while all(turns < len(batches) and len(batches[turns]) == self.batch_size for batches in lane_batches):
            order += [index for batches in lane_batches for index in batches[turns]]
            turns += 1
        order += [index for batches in lane_batches for batch in batches[turns:] for index in batch]
        order = (order * math.ceil(self.num_samples / max(len(order), 1)))[: self.num_samples]
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples


def make_train_loader(job: TrainJob, epoch: int, procs: Processes) -> DataLoader:
    """The epoch's loader. Its order is a function of (seed, epoch, rank) only (by image, of the
    number of workers too)."""
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
        sampler = ImageGroupedSampler(job.sample_groups, procs.world_size, procs.rank, job.seed, job.batch_size,
                                      lanes=job.workers)
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
