"""Degraded (LQ, GT) training pairs: per-sample in data-loader workers, or batched at collate time.

Two ways to get batches of pairs from an :class:`~varestorer.data.datasets.HQFolderDataset`:

- ``DegradedPairDataset(hq, config)``: each worker degrades its own samples (``degrade``, one image at a
  time, one seeded generator per item); the default collate stacks ``lq``/``gt``.
- ``DataLoader(hq, collate_fn=DegradeCollate(config))``: the worker degrades the whole batch at once
  with the batched pipeline (shared resize draws per batch, as Real-ESRGAN does).

(Or degrade on the GPU in the training loop: ``lq, params = DegradationPipeline(config)(gt.cuda(), generator)``.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import cv2
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from varestorer.degradation.config import DegradationConfig, resolve_degradation_config
from varestorer.degradation.pipeline import DegradationPipeline, degrade


def _single_threaded_in_workers() -> None:
    # torch already runs one thread per DataLoader worker; OpenCV would start one per core in each.
    if get_worker_info() is not None and cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def _config(config: DegradationConfig | str) -> DegradationConfig:
    return resolve_degradation_config(config) if isinstance(config, str) else config


def _configs(config: DegradationConfig | str | Sequence[DegradationConfig | str]) -> list[DegradationConfig]:
    """One config, a preset name or a ``.toml``/``.json`` pipeline file, several of those joined by commas
    (``"mild,realesrgan"``), or a sequence."""
    if isinstance(config, str):
        names = [name.strip() for name in config.split(",")]
        if not all(names):
            raise ValueError(f"empty degradation preset name in {config!r}")
        return [_config(name) for name in names]
    if isinstance(config, DegradationConfig):
        return [config]
    if not config:
        raise ValueError("no degradation given")
    return [_config(c) for c in config]


class DegradedPairDataset(Dataset):
    """Wraps a dataset of ``{"gt": (3, H, W), ...}`` items and adds ``"lq"`` ``(3, H/s, W/s)``.

    Args:
        dataset: e.g. an ``HQFolderDataset`` whose crop size is a multiple of the scale.
        config: a :class:`DegradationConfig`, a preset name or pipeline file (``.toml``/``.json``,
            docs/degradation.md), or several (a sequence, or names joined by commas such as
            ``"mild,realesrgan"``): each item then uses one of them, drawn uniformly from its seed, so a
            model learns both.
        seed: ``None`` draws each item's generator seed from torch's global RNG (seeded per worker by
            the DataLoader); an int makes item ``i`` of epoch ``e`` depend only on ``(seed, e, i)``.
        return_params: add ``"params"``, the JSON string of every drawn value.
    """

    def __init__(
        self,
        dataset: Dataset,
        config: DegradationConfig | str | Sequence[DegradationConfig | str],
        *,
        seed: int | None = None,
        return_params: bool = False,
    ) -> None:
        self.dataset = dataset
        self.configs = _configs(config)
        self.config = self.configs[0]
        self.seed = seed
        self.epoch = 0
        self.return_params = return_params

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """New degradations (and crops, when the wrapped dataset supports it) each epoch."""
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        _single_threaded_in_workers()
        item = dict(self.dataset[index])
        if self.seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        else:
            seed = (self.seed * 1_000_003 + self.epoch * 7_919 + index) % 2**62 + 1
        config = self.configs[seed % len(self.configs)]
        lq, params = degrade(item["gt"], config, torch.Generator().manual_seed(seed))
        item["lq"] = lq
        item["seed"] = seed
        if self.return_params:
            item["params"] = json.dumps(params)
        return item


class DegradeCollate:
    """``collate_fn`` that stacks HQ items and degrades the batch with the batched pipeline.

    Adds ``"lq"`` ``(B, 3, H/s, W/s)`` and ``"params"`` (list of per-sample dicts) to the collated batch.
    Draws come from ``generator`` if given, else from a generator seeded by torch's global RNG
    (seeded per worker by the DataLoader, so runs are reproducible under ``torch.manual_seed``).
    """

    def __init__(self, config: DegradationConfig | str, generator: torch.Generator | None = None) -> None:
        self.pipeline = DegradationPipeline(_config(config))
        self.generator = generator

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        _single_threaded_in_workers()
        batch = default_collate(items)
        generator = self.generator
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        batch["lq"], batch["params"] = self.pipeline(batch["gt"], generator)
        return batch


class PairPool:
    """Real-ESRGAN's training-pair pool: mixes batch-shared degradations (e.g. one resize) across batches.

    ``lq, gt = pool(lq, gt)``: until ``capacity`` pairs are stored, batches are stored and returned
    unchanged; afterwards the pool is shuffled, the incoming batch swapped in and a batch of older
    pairs returned. ``capacity`` must be a multiple of the batch size (Real-ESRGAN uses 180).
    Tensors stay on their device; the shuffle uses ``generator`` (CPU). Only (LQ, GT) tensors are
    pooled: captions or other per-sample fields would no longer match, so use it for caption-free training.
    """

    def __init__(self, capacity: int = 180, generator: torch.Generator | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.generator = generator
        self.lq: torch.Tensor | None = None
        self.gt: torch.Tensor | None = None
        self.count = 0

    def __call__(self, lq_BCHW: torch.Tensor, gt_BCHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = lq_BCHW.shape[0]
        if gt_BCHW.shape[0] != batch:
            raise ValueError(f"lq and gt batch sizes differ: {batch} vs {gt_BCHW.shape[0]}")
        if self.capacity % batch:
            raise ValueError(f"pool capacity {self.capacity} is not a multiple of the batch size {batch}")
        if self.lq is None or self.gt is None:
            self.lq = lq_BCHW.new_empty((self.capacity, *lq_BCHW.shape[1:]))
            self.gt = gt_BCHW.new_empty((self.capacity, *gt_BCHW.shape[1:]))
        if self.lq.shape[1:] != lq_BCHW.shape[1:] or self.gt.shape[1:] != gt_BCHW.shape[1:]:
            raise ValueError("pair sizes changed; the pool holds one LQ size and one GT size")
        if self.count < self.capacity:
            self.lq[self.count : self.count + batch] = lq_BCHW
            self.gt[self.count : self.count + batch] = gt_BCHW
            self.count += batch
            return lq_BCHW, gt_BCHW
        order = torch.randperm(self.capacity, generator=self.generator).to(self.lq.device)
        self.lq, self.gt = self.lq[order], self.gt[order]
        out_lq, out_gt = self.lq[:batch].clone(), self.gt[:batch].clone()
        self.lq[:batch], self.gt[:batch] = lq_BCHW, gt_BCHW
        return out_lq, out_gt
