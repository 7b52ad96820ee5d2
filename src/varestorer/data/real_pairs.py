"""Real camera (LQ, GT) training pairs, and their mix with pairs degraded on the fly.

Synthetic degradations (data/pairs.py) do not cover what real cameras do (issue 32). A folder of real
pairs, each ``DIR/lq/NAME.*`` beside ``DIR/gt/NAME.*`` with the GT exactly ``scale`` x the LQ in pixels
(e.g. ``recipes/prepare_city100.py``'s output), gives aligned random crops of them:

    real = RealPairDataset(["local/data/city100_x4"], crop_size=256, scale=4, items=150, seed=0)
    dataset = MixedPairDataset(DegradedPairDataset(hq, "mild,realesrgan", seed=0), real)

``MixedPairDataset`` puts the real items after the synthetic ones, so the synthetic items keep their indices
(and so their crops and degradations); :func:`real_item_count` sizes the real part for a share of an epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from varestorer.data.datasets import images_by_stem, read_caption
from varestorer.data.transforms import random_flip, to_tensor
from varestorer.io.images import read_rgb

_REAL_SALT = 2**62 + 1  # seeded real items' generators never equal a seeded synthetic item's (<= 2**62)


def _by_stem(folder: Path) -> dict[str, Path]:
    return images_by_stem(folder, "a real-pair folder holds lq/ and gt/")


def find_real_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """The ``(lq, gt)`` files of one pair folder, matched by stem, sorted by stem.

    Raises:
        FileNotFoundError: no ``lq/`` or ``gt/`` folder, or no image in them.
        ValueError: a stem in only one of the two folders, or twice in one.
    """
    root = Path(root)
    lq, gt = _by_stem(root / "lq"), _by_stem(root / "gt")
    unmatched = sorted(set(lq) ^ set(gt))
    if unmatched:
        raise ValueError(
            f"{root}: {len(unmatched)} image stem(s) in only one of lq/ and gt/ (e.g. {unmatched[0]!r}); "
            "real pairs are matched by stem"
        )
    if not lq:
        raise FileNotFoundError(f"{root}: no images in lq/ and gt/")
    return [(lq[name], gt[name]) for name in sorted(lq)]


def _size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    with Image.open(path) as image:
        return image.height, image.width


def real_item_count(synthetic_items: int, fraction: float) -> int:
    """How many real items to add to ``synthetic_items`` so that they make ``fraction`` of the whole (>= 1).

    Raises:
        ValueError: ``fraction`` not in (0, 1).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the real-pair fraction must be in (0, 1), got {fraction}")
    return max(1, round(synthetic_items * fraction / (1 - fraction)))


class RealPairDataset(Dataset):
    """Aligned random crops of real ``(LQ, GT)`` pairs from pair folders (``DIR/lq``, ``DIR/gt``).

    Each item crops the LQ to ``crop_size / scale`` px at a random ``(y, x)`` and the GT to ``crop_size`` px
    at ``(scale * y, scale * x)``, then flips both the same way, so a GT that is an exact upscale of its LQ
    stays one.

    Args:
        roots: pair folders; every LQ/GT stem must be in both ``lq/`` and ``gt/``.
        crop_size: GT crop side in px, a multiple of ``scale``.
        scale: GT size / LQ size; every pair must be exactly that.
        items: items per epoch (default: one per pair); item ``i`` crops pair ``i % pairs``, each time anew.
        hflip, vflip, rot90: random flips (each with probability 0.5 when enabled), the same for LQ and GT.
        seed: ``None`` draws each item's generator from torch's global RNG; an int makes item ``i`` of
            epoch ``e`` depend only on ``(seed, e, i)``, so a resumed run sees the same crops.

    Items (the keys of ``DegradedPairDataset``'s, so the two batch together): ``{"lq": (3, crop/scale,
    crop/scale), "gt": (3, crop, crop)`` float32 in ``[0, 1]``, ``"caption"`` (the GT's ``stem.txt``),
    ``"path"`` (the GT file), ``"seed"``}.

    Raises:
        FileNotFoundError: a folder or its ``lq/``/``gt/`` is missing or empty.
        ValueError: unmatched stems, a GT that is not ``scale`` x its LQ, an LQ smaller than the crop, or a
            ``crop_size`` that is not a positive multiple of ``scale``.
    """

    def __init__(
        self,
        roots: str | Path | Sequence[str | Path],
        *,
        crop_size: int,
        scale: int = 4,
        items: int | None = None,
        hflip: bool = True,
        vflip: bool = False,
        rot90: bool = False,
        seed: int | None = None,
    ) -> None:
        if scale < 1 or crop_size < scale or crop_size % scale:
            raise ValueError(f"crop_size must be a positive multiple of the scale {scale}, got {crop_size}")
        roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        if not roots:
            raise ValueError("no real-pair folder given")
        self.pairs = [pair for root in roots for pair in find_real_pairs(root)]
        self.crop_size, self.scale = crop_size, scale
        for lq_path, gt_path in self.pairs:
            self._check_sizes(_size(lq_path), _size(gt_path), gt_path)
        self.items = len(self.pairs) if items is None else items
        if self.items < 1:
            raise ValueError(f"items must be >= 1, got {self.items}")
        self.hflip, self.vflip, self.rot90 = hflip, vflip, rot90
        self.seed = seed
        self.epoch = 0

    def _check_sizes(self, lq_hw: tuple[int, ...], gt_hw: tuple[int, ...], gt_path: Path) -> None:
        lq_height, lq_width = lq_hw[:2]
        if tuple(gt_hw[:2]) != (self.scale * lq_height, self.scale * lq_width):
            raise ValueError(f"{gt_path}: GT {gt_hw[1]}x{gt_hw[0]} is not {self.scale}x its LQ {lq_width}x{lq_height}")
        side = self.crop_size // self.scale
        if lq_height < side or lq_width < side:
            raise ValueError(f"{gt_path}: LQ {lq_width}x{lq_height} is smaller than the {side} px LQ crop")

    def __len__(self) -> int:
        return self.items

    def set_epoch(self, epoch: int) -> None:
        """New crops and flips each epoch (of a seeded dataset)."""
        self.epoch = epoch

    def item_seed(self, index: int) -> int:
        """The generator seed of item ``index``: fixed by ``(seed, epoch, index)`` or drawn from torch's RNG."""
        if self.seed is None:
            return int(torch.randint(0, 2**62, (1,)).item())
        return (self.seed * 1_000_003 + self.epoch * 7_919 + index) % 2**61 + _REAL_SALT

    def __getitem__(self, index: int) -> dict[str, Any]:
        lq_path, gt_path = self.pairs[index % len(self.pairs)]
        lq, gt = read_rgb(lq_path), read_rgb(gt_path)
        self._check_sizes(lq.shape, gt.shape, gt_path)  # the header agreed; EXIF rotation may not
        seed = self.item_seed(index)
        generator = torch.Generator().manual_seed(seed)
        side, scale = self.crop_size // self.scale, self.scale
        top = int(torch.randint(lq.shape[0] - side + 1, (1,), generator=generator).item())
        left = int(torch.randint(lq.shape[1] - side + 1, (1,), generator=generator).item())
        lq = lq[top : top + side, left : left + side]
        gt = gt[scale * top : scale * (top + side), scale * left : scale * (left + side)]
        flips = {"hflip": self.hflip, "vflip": self.vflip, "rot90": self.rot90}
        state = generator.get_state()  # the same coins for both
        lq = random_flip(lq, generator, **flips)
        generator.set_state(state)
        gt = random_flip(gt, generator, **flips)
        return {
            "gt": to_tensor(np.ascontiguousarray(gt)),
            "caption": read_caption(gt_path),
            "path": str(gt_path),
            "lq": to_tensor(np.ascontiguousarray(lq)),
            "seed": seed,
        }


class MixedPairDataset(ConcatDataset):
    """Synthetic pairs (indices ``0..len(synthetic)-1``, unchanged) followed by real ones: torch's
    ``ConcatDataset`` that also passes ``set_epoch`` on to both parts.

    The loader's shuffle spreads the real items over the batches: each batch holds on average
    ``len(real) / len(self)`` of them, and every epoch exactly that share.
    """

    def __init__(self, synthetic: Dataset, real: Dataset) -> None:
        super().__init__([synthetic, real])

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            if callable(getattr(part, "set_epoch", None)):
                part.set_epoch(epoch)  # type: ignore[attr-defined]
