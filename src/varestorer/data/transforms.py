"""Array/tensor transforms for training crops: reflect padding, random/center crops, flips, to-tensor.

Arrays are ``(H, W, C)`` numpy arrays as returned by :mod:`varestorer.io.images`; every random
choice goes through an explicit ``torch.Generator`` (``None`` = torch's global generator).
"""

from __future__ import annotations

import numpy as np
import torch


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)`` (``high`` >= 1)."""
    return int(torch.randint(high, (1,), generator=generator).item())


def _coin(probability: float, generator: torch.Generator | None) -> bool:
    return bool(torch.rand((), generator=generator).item() < probability)


def pad_reflect(array_HWC: np.ndarray, min_height: int, min_width: int) -> np.ndarray:
    """Reflect-pad the bottom/right so the image is at least ``min_height`` x ``min_width``.

    Works for any pad width (numpy repeats the reflection); a 1-pixel axis is edge-padded.
    """
    height, width = array_HWC.shape[:2]
    pad_h, pad_w = max(0, min_height - height), max(0, min_width - width)
    if pad_h == 0 and pad_w == 0:
        return array_HWC
    if pad_h:
        array_HWC = np.pad(array_HWC, ((0, pad_h), (0, 0), (0, 0)), mode="reflect" if height > 1 else "edge")
    if pad_w:
        array_HWC = np.pad(array_HWC, ((0, 0), (0, pad_w), (0, 0)), mode="reflect" if width > 1 else "edge")
    return array_HWC


def random_crop(array_HWC: np.ndarray, size: int, generator: torch.Generator | None = None) -> np.ndarray:
    """A ``size`` x ``size`` crop at a uniformly random position (reflect-padded first if smaller)."""
    array_HWC = pad_reflect(array_HWC, size, size)
    height, width = array_HWC.shape[:2]
    top = _randint(height - size + 1, generator)
    left = _randint(width - size + 1, generator)
    return array_HWC[top : top + size, left : left + size]


def center_crop(array_HWC: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` crop (reflect-padded first if smaller)."""
    array_HWC = pad_reflect(array_HWC, size, size)
    height, width = array_HWC.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return array_HWC[top : top + size, left : left + size]


def mod_crop(array_HWC: np.ndarray, multiple: int) -> np.ndarray:
    """Crop the bottom/right so both sides are multiples of ``multiple``.

    Raises:
        ValueError: a side is smaller than ``multiple``.
    """
    height, width = array_HWC.shape[:2]
    if height < multiple or width < multiple:
        raise ValueError(f"image {width}x{height} is smaller than the scale {multiple}")
    return array_HWC[: height - height % multiple, : width - width % multiple]


def random_flip(
    array_HWC: np.ndarray,
    generator: torch.Generator | None = None,
    *,
    hflip: bool = True,
    vflip: bool = False,
    rot90: bool = False,
) -> np.ndarray:
    """Random horizontal flip / vertical flip / transpose, each with probability 0.5 when enabled.

    A coin is always drawn for each enabled flip, so the generator advances the same way for every image.
    """
    if hflip and _coin(0.5, generator):
        array_HWC = array_HWC[:, ::-1]
    if vflip and _coin(0.5, generator):
        array_HWC = array_HWC[::-1]
    if rot90 and _coin(0.5, generator):
        array_HWC = array_HWC.transpose(1, 0, 2)
    return array_HWC


def to_tensor(array_HWC: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` ``uint8``/``uint16`` -> float32 ``(C, H, W)`` in ``[0, 1]``.

    Raises:
        ValueError: not a 3-D ``uint8``/``uint16`` array.
    """
    if array_HWC.ndim != 3:
        raise ValueError(f"expected an (H, W, C) array, got shape {array_HWC.shape}")
    if array_HWC.dtype == np.uint8:
        scale = 255.0
    elif array_HWC.dtype == np.uint16:
        scale = 65535.0
    else:
        raise ValueError(f"expected uint8 or uint16 pixels, got {array_HWC.dtype}")
    if not (array_HWC.flags.writeable and array_HWC.flags.c_contiguous):
        array_HWC = np.array(array_HWC)  # flipped views and read-only decoder buffers
    tensor = torch.from_numpy(array_HWC).permute(2, 0, 1)
    return tensor.to(torch.float32).div_(scale)


def to_uint8(image_CHW: torch.Tensor) -> np.ndarray:
    """Float ``(C, H, W)`` in ``[0, 1]`` -> ``(H, W, C)`` ``uint8`` (clamped, rounded)."""
    if image_CHW.ndim != 3:
        raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(image_CHW.shape)}")
    array = (image_CHW.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return np.ascontiguousarray(array.permute(1, 2, 0).cpu().numpy())
