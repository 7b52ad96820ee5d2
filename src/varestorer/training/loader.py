"""Training data loaders: sharded across processes, seeded, and resumable mid-epoch.

Every process sees a disjoint shard of a per-epoch permutation that depends only on
``(seed, epoch)`` (``DistributedSampler`` semantics). The sampler can skip the samples already
consumed in the current epoch, so a resumed run continues with exactly the batches a straight run
would have seen. Workers are seeded from the loader's generator, which is re-seeded per
``(seed, rank, epoch)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch after its first ``skip`` samples (this rank's)."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, shuffle: bool, seed: int, drop_last: bool):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy and ``random`` seeds from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed + worker_id)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed for the loader generator of one epoch on one process."""
    return (seed * 1_000_003 + rank * 10_007 + epoch) % 2**63


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    pin_memory: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """A DataLoader over this process's shard with a :class:`ResumableDistributedSampler`.

    Raises:
        ValueError: the dataset is too small for one batch per process.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if drop_last and size < batch_size * world_size:
        raise ValueError(
            f"the dataset has {size} samples, fewer than one batch ({batch_size}) per process ({world_size})"
        )
    sampler = ResumableDistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(epoch_seed(seed, rank, 0)),
        collate_fn=collate_fn,
        persistent_workers=False,
    )


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested dicts/lists/tuples to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(value, device) for value in batch)
    return batch
