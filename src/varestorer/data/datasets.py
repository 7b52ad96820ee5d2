"""Image-folder datasets: HQ folders for training (random crops, flips, captions) and paired LQ/GT folders.

Every item is a dict of tensors ``(3, H, W)`` float32 in ``[0, 1]`` plus strings, so the default
``torch.utils.data`` collate stacks them. Unreadable files are skipped with a warning and counted in
``dataset.skipped`` (per process: each data-loader worker keeps its own count).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from varestorer.data.transforms import center_crop, random_crop, random_flip, to_tensor
from varestorer.io.images import ImageReadError, list_images, read_rgb

logger = logging.getLogger(__name__)

MAX_SKIPS = 32  # consecutive unreadable files tolerated for one item before giving up


def read_caption(image_path: Path) -> str:
    """The caption sidecar ``stem.txt`` next to an image (stripped), or ``""`` when there is none."""
    sidecar = image_path.with_suffix(".txt")
    if not sidecar.is_file():
        return ""
    return sidecar.read_text(encoding="utf-8", errors="replace").strip()


def _as_list(paths: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def images_by_stem(folder: Path, hint: str = "") -> dict[str, Path]:
    """The images under ``folder`` (recursively) by file stem; a stem found twice is an error.

    Raises:
        FileNotFoundError: no such folder (``hint`` is added to the message).
        ValueError: two images share a stem.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}{f' ({hint})' if hint else ''}")
    found: dict[str, Path] = {}
    for path in list_images([folder], recursive=True):
        if path.stem in found:
            raise ValueError(f"stem {path.stem!r} occurs twice in {folder}: {found[path.stem]} and {path}")
        found[path.stem] = path
    return found


class HQFolderDataset(Dataset):
    """High-quality images from folders (searched recursively), cropped and flipped for training.

    Args:
        roots: folders, files or glob patterns (png/jpg/webp/bmp/tiff).
        crop_size: side of the square crop in px; images smaller than it are reflect-padded.
            ``None`` returns the whole image (only batchable when all images share one size).
        random_crop: random crop position (training) or center crop (validation).
        hflip, vflip, rot90: random flips (each with probability 0.5 when enabled).
        seed: ``None`` draws crops/flips from torch's global generator (seeded per worker by the
            DataLoader); an int makes item ``i`` of epoch ``e`` depend only on ``(seed, e, i)``.
        repeat: every image appears this many times per epoch, each time with its own crop: a small
            folder then makes long epochs, so the DataLoader's workers restart less often.

    Items: ``{"gt": (3, crop, crop) float32 in [0, 1], "caption": str, "path": str}``. Images are
    decoded with their EXIF orientation; gray, RGBA (alpha dropped), palette and 16-bit files become 8-bit RGB.

    Raises:
        FileNotFoundError: no image found under ``roots``.
        ValueError: ``crop_size`` < 1.
    """

    def __init__(
        self,
        roots: str | Path | Sequence[str | Path],
        *,
        crop_size: int | None = 256,
        random_crop: bool = True,
        hflip: bool = True,
        vflip: bool = False,
        rot90: bool = False,
        seed: int | None = None,
        repeat: int = 1,
    ) -> None:
        if crop_size is not None and crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size}")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.paths = list_images(_as_list(roots), recursive=True)
        if not self.paths:
            raise FileNotFoundError(f"no images (png/jpg/webp/bmp/tiff) under {', '.join(map(str, _as_list(roots)))}")
        self.crop_size = crop_size
        self.random_crop = random_crop
        self.hflip, self.vflip, self.rot90 = hflip, vflip, rot90
        self.seed = seed
        self.repeat = repeat
        self.epoch = 0
        self.skipped: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths) * self.repeat

    def set_epoch(self, epoch: int) -> None:
        """Change the crops/flips of a seeded dataset from one epoch to the next."""
        self.epoch = epoch

    def item_generator(self, index: int) -> torch.Generator:
        """The generator for item ``index``: fixed by ``(seed, epoch, index)`` or freshly drawn from torch's RNG."""
        if self.seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        else:
            seed = (self.seed * 1_000_003 + self.epoch * 7_919 + index) % 2**62
        return torch.Generator().manual_seed(seed)

    def load(self, index: int) -> tuple[np.ndarray, Path]:
        """Decode item ``index`` as ``(H, W, 3)`` uint8, skipping (and counting) unreadable files."""
        for attempt in range(min(MAX_SKIPS, len(self.paths))):
            path = self.paths[(index + attempt) % len(self.paths)]
            if path in self.skipped:
                continue
            try:
                return read_rgb(path), path
            except (ImageReadError, OSError) as error:
                self.skipped.add(path)
                warnings.warn(f"skipping unreadable image ({len(self.skipped)} so far): {error}", stacklevel=2)
        raise RuntimeError(f"no readable image among {MAX_SKIPS} files from index {index}; see the warnings")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        array, path = self.load(index)
        generator = self.item_generator(index)
        if self.crop_size is not None:
            if self.random_crop:
                array = random_crop(array, self.crop_size, generator)
            else:
                array = center_crop(array, self.crop_size)
        array = random_flip(array, generator, hflip=self.hflip, vflip=self.vflip, rot90=self.rot90)
        return {"gt": to_tensor(array), "caption": read_caption(path), "path": str(path)}


class PairedFolderDataset(Dataset):
    """Validation pairs: ``lq_dir/NAME.*`` with ``gt_dir/NAME.*`` matched by file stem (recursively).

    Items: ``{"lq": (3, h, w), "gt": (3, H, W)`` float32 in ``[0, 1]``, ``"name": str, "caption": str}``
    (caption from the GT's ``stem.txt`` sidecar, else the LQ's). Unmatched files are logged and ignored.

    Raises:
        FileNotFoundError: a folder is missing or no stem is found in both.
        ValueError: a stem occurs twice in one folder.
    """

    def __init__(self, lq_dir: str | Path, gt_dir: str | Path) -> None:
        lq = self._by_stem(Path(lq_dir))
        gt = self._by_stem(Path(gt_dir))
        names = sorted(set(lq) & set(gt))
        if not names:
            raise FileNotFoundError(f"no image stem found in both {lq_dir} and {gt_dir}")
        unmatched = sorted(set(lq) ^ set(gt))
        if unmatched:
            logger.warning("%d unpaired image(s) ignored, e.g. %s", len(unmatched), unmatched[0])
        self.names = names
        self.pairs = [(lq[n], gt[n]) for n in names]
        self.skipped: set[Path] = set()

    @staticmethod
    def _by_stem(folder: Path) -> dict[str, Path]:
        return images_by_stem(folder)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        lq_path, gt_path = self.pairs[index]
        try:
            lq, gt = read_rgb(lq_path), read_rgb(gt_path)
        except ImageReadError:
            self.skipped.update((lq_path, gt_path))
            raise
        caption = read_caption(gt_path) or read_caption(lq_path)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "name": self.names[index], "caption": caption}
