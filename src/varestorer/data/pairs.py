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
from typing import Any

import cv2
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from varestorer.degradation.config import DegradationConfig
from varestorer.degradation.pipeline import DegradationPipeline, degrade


def _single_threaded_in_workers() -> None:
    # torch already runs one thread per DataLoader worker; OpenCV would start one per core in each.
    if get_worker_info() is not None and cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def _config(config: DegradationConfig | str) -> DegradationConfig:
    return DegradationPipeline.from_preset(config).config if isinstance(config, str) else config


class DegradedPairDataset(Dataset):
    """Wraps a dataset of ``{"gt": (3, H, W), ...}`` items and adds ``"lq"`` ``(3, H/s, W/s)``.

    Args:
        dataset: e.g. an ``HQFolderDataset`` whose crop size is a multiple of the scale.
        config: a :class:`DegradationConfig` or a preset name.
        seed: ``None`` draws each item's generator seed from torch's global RNG (seeded per worker by
            the DataLoader); an int makes item ``i`` of epoch ``e`` depend only on ``(seed, e, i)``.
        return_params: add ``"params"``, the JSON string of every drawn value.
    """

    def __init__(
        self,
        dataset: Dataset,
        config: DegradationConfig | str,
        *,
        seed: int | None = None,
        return_params: bool = False,
    ) -> None:
        self.dataset = dataset
        self.config = _config(config)
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
        lq, params = degrade(item["gt"], self.config, torch.Generator().manual_seed(seed))
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
