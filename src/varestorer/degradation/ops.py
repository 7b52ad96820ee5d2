"""Batched degradation operators on ``(B, C, H, W)`` float tensors in ``[0, 1]`` (CPU or GPU).

Each op takes per-sample parameters as sequences of length B; randomness (noise fields) comes only
from the explicit ``generator`` argument. JPEG is real baseline JPEG coding (OpenCV, 4:2:0, per image
on the CPU), not a differentiable approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ResizeMode = Literal["area", "bilinear", "bicubic"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("area", "bilinear", "bicubic")


def _check_batch(x: torch.Tensor, name: str = "image") -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float (B, C, H, W) tensor, got {tuple(x.shape)} {x.dtype}")


def pad_reflect(x_BCHW: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflect-pad (OpenCV BORDER_REFLECT_101) by ``pad_h`` rows and ``pad_w`` columns on each side.

    Pads wider than the image are built by reflecting repeatedly; a 1-pixel axis is replicated.
    """
    for axis, pad in ((2, pad_h), (3, pad_w)):
        while pad > 0:
            size = x_BCHW.shape[axis]
            step = min(pad, size - 1)
            mode = "reflect" if step > 0 else "replicate"
            step = step if step > 0 else pad
            widths = (0, 0, step, step) if axis == 2 else (step, step, 0, 0)
            x_BCHW = F.pad(x_BCHW, widths, mode=mode)
            pad -= step
    return x_BCHW


def filter2d(x_BCHW: torch.Tensor, kernels_Bkk: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Correlate every sample with its own odd ``(k, k)`` kernel (same for all channels), reflect borders.

    Kernels of different sizes must be zero-padded to a common odd size first (``pad_to`` in
    :mod:`varestorer.degradation.kernels`). ``backend="torch"`` runs one grouped (depthwise)
    convolution for the batch (any device); ``"opencv"`` runs ``cv2.filter2D`` per image on the CPU
    in 7x7 tiles (several times faster there: OpenCV's direct path is SIMD, its FFT path slow for
    small images). ``"auto"`` picks OpenCV for CPU float32 tensors. Both compute the same sums and
    agree to float rounding (~1e-6).
    """
    _check_batch(x_BCHW)
    batch, channels, height, width = x_BCHW.shape
    if kernels_Bkk.ndim == 2:
        kernels_Bkk = kernels_Bkk.expand(batch, -1, -1)
    if kernels_Bkk.shape[0] != batch or kernels_Bkk.shape[1] != kernels_Bkk.shape[2] or kernels_Bkk.shape[1] % 2 == 0:
        raise ValueError(f"expected (B, k, k) kernels with odd k for B={batch}, got {tuple(kernels_Bkk.shape)}")
    size = kernels_Bkk.shape[-1]
    if size == 1:
        return x_BCHW * kernels_Bkk.to(x_BCHW).view(batch, 1, 1, 1)
    if backend not in ("auto", "torch", "opencv"):
        raise ValueError(f"backend must be auto, torch or opencv, got {backend!r}")
    if backend == "opencv" or (backend == "auto" and _opencv_ok(x_BCHW)):
        images = [_filter2d_opencv(x_BCHW[i], kernels_Bkk[i]) for i in range(batch)]
        return torch.stack(images)
    pad = size // 2
    padded = pad_reflect(x_BCHW, pad, pad)
    kernels = kernels_Bkk.to(x_BCHW)
    weight = kernels.repeat_interleave(channels, dim=0).unsqueeze(1)  # (B*C, 1, k, k)
    out = F.conv2d(padded.reshape(1, batch * channels, *padded.shape[2:]), weight, groups=batch * channels)
    return out.view(batch, channels, height, width)


def _opencv_ok(x_BCHW: torch.Tensor) -> bool:
    return x_BCHW.device.type == "cpu" and x_BCHW.dtype == torch.float32 and not x_BCHW.requires_grad


_TILE = 7  # OpenCV filters kernels of < 50 taps directly (SIMD) and larger ones through a DFT


def _filter2d_opencv(image_CHW: torch.Tensor, kernel_kk: torch.Tensor) -> torch.Tensor:
    """One image, one kernel, via ``cv2.filter2D`` on 7x7 kernel tiles over a reflect-padded copy."""
    size = kernel_kk.shape[-1]
    kernel = kernel_kk.detach().to(torch.float32).cpu().numpy()
    image = np.ascontiguousarray(image_CHW.detach().permute(1, 2, 0).numpy())
    height, width = image.shape[:2]
    if size <= _TILE:
        out = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    else:
        pad = size // 2
        padded = pad_reflect(image_CHW.detach()[None], pad, pad)[0].permute(1, 2, 0).numpy()
        padded = np.ascontiguousarray(padded)
        tiles = -(-size // _TILE)
        full = np.zeros((tiles * _TILE, tiles * _TILE), np.float32)
        full[:size, :size] = kernel
        out = np.zeros_like(image)
        for ty in range(tiles):
            for tx in range(tiles):
                tile = full[ty * _TILE : (ty + 1) * _TILE, tx * _TILE : (tx + 1) * _TILE]
                if not tile.any():
                    continue
                oy, ox = ty * _TILE, tx * _TILE
                # anchor (0, 0): response[y, x] = sum tile[i, j] * padded[y + i, x + j]
                response = cv2.filter2D(padded, -1, tile, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
                out += response[oy : oy + height, ox : ox + width]  # type: ignore[arg-type]  # float32 both
    if out.ndim == 2:
        out = out[..., None]
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)


def resize(x_BCHW: torch.Tensor, size_hw: tuple[int, int], mode: ResizeMode) -> torch.Tensor:
    """Resize to ``size_hw`` with ``area`` / ``bilinear`` / ``bicubic`` (no antialias, like Real-ESRGAN)."""
    _check_batch(x_BCHW)
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    size_hw = (max(1, int(size_hw[0])), max(1, int(size_hw[1])))
    if tuple(x_BCHW.shape[2:]) == size_hw:
        return x_BCHW
    if mode == "area":
        return F.interpolate(x_BCHW, size=size_hw, mode="area")
    return F.interpolate(x_BCHW, size=size_hw, mode=mode, align_corners=False)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(round(h * s), round(w * s))``, at least 1 px each."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def rgb_to_gray(x_B3HW: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma, ``(B, 1, H, W)``."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x_B3HW.dtype, device=x_B3HW.device).view(1, 3, 1, 1)
    return (x_B3HW * weights).sum(dim=1, keepdim=True)


def gaussian_noise(
    x_BCHW: torch.Tensor, sigmas: Sequence[float], grays: Sequence[bool], generator: torch.Generator | None
) -> torch.Tensor:
    """Add N(0, sigma/255) noise per sample (``sigmas`` on the 0-255 scale); gray = one field for all channels.

    Returns the noisy batch clamped to ``[0, 1]``.
    """
    _check_batch(x_BCHW)
    out = torch.empty_like(x_BCHW)
    for i, (sigma, gray) in enumerate(zip(sigmas, grays, strict=True)):
        channels = 1 if gray else x_BCHW.shape[1]
        field = torch.randn((channels, *x_BCHW.shape[2:]), generator=generator, dtype=torch.float32)
        out[i] = x_BCHW[i] + field.to(x_BCHW) * (sigma / 255.0)
    return out.clamp_(0, 1)


def poisson_noise(
    x_BCHW: torch.Tensor, scales: Sequence[float], grays: Sequence[bool], generator: torch.Generator | None
) -> torch.Tensor:
    """Add shot noise per sample: photon counts set by the image's number of distinct 8-bit levels, times ``scale``.

    As in Real-ESRGAN: ``vals = 2 ** ceil(log2(#unique levels))``, ``noise = Poisson(x * vals) / vals - x``,
    then ``x + scale * noise``; gray noise is computed on the luma and shared by the channels. Clamped to [0, 1].
    """
    _check_batch(x_BCHW)
    out = torch.empty_like(x_BCHW)
    for i, (scale, gray) in enumerate(zip(scales, grays, strict=True)):
        image = rgb_to_gray(x_BCHW[i : i + 1])[0] if gray and x_BCHW.shape[1] == 3 else x_BCHW[i]
        levels = (image.clamp(0, 1) * 255).round()
        count = int((torch.bincount(levels.long().flatten(), minlength=256) > 0).sum())
        vals = 2.0 ** math.ceil(math.log2(count))
        quantized = (levels / 255).cpu()
        noisy = torch.poisson(quantized * vals, generator=generator) / vals
        noise = (noisy - quantized).to(x_BCHW)
        out[i] = x_BCHW[i] + noise * scale  # a (1, H, W) gray field broadcasts over the channels
    return out.clamp_(0, 1)


def jpeg(x_B3HW: torch.Tensor, qualities: Sequence[int]) -> torch.Tensor:
    """Real JPEG round trip per image (OpenCV baseline, 4:2:0 chroma) at integer ``qualities`` in [1, 100].

    The input is clamped and rounded to 8 bits first; the output is the decoded 8-bit image as float.
    """
    _check_batch(x_B3HW)
    if x_B3HW.shape[1] != 3:
        raise ValueError(f"JPEG needs 3-channel images, got {x_B3HW.shape[1]}")
    pixels = (x_B3HW.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for image, quality in zip(pixels, qualities, strict=True):
        quality = int(quality)
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
        bgr = np.ascontiguousarray(image[..., ::-1])
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("OpenCV failed to encode a JPEG")
        decoded.append(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1])  # type: ignore[index]
    array = np.ascontiguousarray(np.stack(decoded))
    return torch.from_numpy(array).to(x_B3HW.device).permute(0, 3, 1, 2).to(x_B3HW.dtype) / 255.0


def _gaussian_1d(radius: int, sigma: float) -> torch.Tensor:
    axis = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (axis / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x_BCHW: torch.Tensor, size: int, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur (reflect borders); ``sigma=None`` uses OpenCV's rule for ``size``."""
    _check_batch(x_BCHW)
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Gaussian blur size must be a positive odd number, got {size}")
    radius = size // 2
    kernel = _gaussian_1d(radius, sigma).to(x_BCHW)
    batch, channels, height, width = x_BCHW.shape
    if _opencv_ok(x_BCHW) and radius < min(height, width):
        taps = kernel.numpy()
        images = [
            cv2.sepFilter2D(
                np.ascontiguousarray(image.permute(1, 2, 0).numpy()), -1, taps, taps, borderType=cv2.BORDER_REFLECT_101
            )
            for image in x_BCHW.detach()
        ]
        return torch.from_numpy(np.stack([i if i.ndim == 3 else i[..., None] for i in images])).permute(0, 3, 1, 2)
    groups = batch * channels  # depthwise grouped convs: the fast CPU path (1-channel convs are slow)
    flat = pad_reflect(x_BCHW, radius, radius).reshape(1, groups, height + 2 * radius, width + 2 * radius)
    flat = F.conv2d(flat, kernel.view(1, 1, 1, -1).expand(groups, 1, 1, size), groups=groups)
    flat = F.conv2d(flat, kernel.view(1, 1, -1, 1).expand(groups, 1, size, 1), groups=groups)
    return flat.view(batch, channels, height, width)


def usm_sharpen(x_BCHW: torch.Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10.0) -> torch.Tensor:
    """Unsharp masking as in Real-ESRGAN: residual from a Gaussian blur (size ``radius`` made odd),
    applied where it exceeds ``threshold`` (0-255 scale) through a blurred soft mask. Returns [0, 1]."""
    size = radius + 1 if radius % 2 == 0 else radius
    blurred = gaussian_blur(x_BCHW, size)
    residual = x_BCHW - blurred
    mask = (residual.abs() * 255 > threshold).to(x_BCHW.dtype)
    soft_mask = gaussian_blur(mask, size)
    sharp = (x_BCHW + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * x_BCHW
