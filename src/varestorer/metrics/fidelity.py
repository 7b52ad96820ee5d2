"""PSNR and SSIM, on the BT.601 luma (Y) channel as MATLAB/BasicSR compute it, or on RGB.

Inputs are ``(H, W, 3)`` RGB arrays: float in [0, 1] or ``uint8``. Everything is computed in float64
on the 0-255 scale, as BasicSR does:

* Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1]), i.e. MATLAB ``rgb2ycbcr`` without its
  uint8 rounding (BasicSR ``bgr2ycbcr(y_only=True)``); range [16, 235]. This is the **ycbcr** Y, not
  pyiqa's default ``yiq`` one.
* ``crop_border`` pixels are removed on each side first (SR papers crop ``scale`` pixels).
* PSNR = 10 log10(255^2 / MSE); identical images give ``inf``.
* SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), C1 = (0.01*255)^2, C2 = (0.03*255)^2,
  statistics over "valid" windows only, mean of the SSIM map; RGB SSIM is the mean of the three channels.
"""

from __future__ import annotations

import cv2
import numpy as np

Y_WEIGHTS = np.array([65.481, 128.553, 24.966])  # R, G, B (inputs in [0, 1]) -> Y in [16, 235]


def to_float255(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """``(H, W, 3)`` uint8 or float [0, 1] -> float64 on the 0-255 scale."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected an (H, W, 3) RGB array, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 or float in [0, 1], got {image.dtype}")
    if image.size and (image.min() < -1e-6 or image.max() > 1 + 1e-6):
        raise ValueError(f"{name}: float images must be in [0, 1], got [{image.min():.3g}, {image.max():.3g}]")
    return image.astype(np.float64) * 255.0


def rgb_to_y(image255_HW3: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 0-255 scale: (H, W, 3) in [0, 255] -> (H, W, 1) in [16, 235]."""
    return (image255_HW3 @ Y_WEIGHTS / 255.0 + 16.0)[..., None]


def _prepare(pred: np.ndarray, gt: np.ndarray, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_float255(pred, name="prediction"), to_float255(gt, name="ground truth")
    if a.shape != b.shape:
        raise ValueError(
            f"size mismatch: prediction {a.shape[1]}x{a.shape[0]} vs ground truth {b.shape[1]}x{b.shape[0]}"
        )
    if crop_border < 0 or 2 * crop_border >= min(a.shape[:2]):
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {a.shape[1]}x{a.shape[0]} image")
    if crop_border:
        a, b = (
            a[crop_border:-crop_border, crop_border:-crop_border],
            b[crop_border:-crop_border, crop_border:-crop_border],
        )
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    return a, b


def psnr(pred: np.ndarray, gt: np.ndarray, *, crop_border: int = 0, y_channel: bool = True) -> float:
    """PSNR in dB (higher is better) of two same-size RGB images; Y channel by default."""
    a, b = _prepare(pred, gt, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _ssim_channel(a_HW: np.ndarray, b_HW: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = kernel @ kernel.T

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]  # "valid" windows only

    mu_a, mu_b = blur(a_HW), blur(b_HW)
    var_a = blur(a_HW * a_HW) - mu_a**2
    var_b = blur(b_HW * b_HW) - mu_b**2
    cov = blur(a_HW * b_HW) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(pred: np.ndarray, gt: np.ndarray, *, crop_border: int = 0, y_channel: bool = True) -> float:
    """SSIM in [-1, 1] (higher is better); Y channel by default, else the mean over R, G, B.

    Raises:
        ValueError: shapes differ, or the (cropped) image is smaller than the 11x11 window.
    """
    a, b = _prepare(pred, gt, crop_border, y_channel)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {a.shape[1]}x{a.shape[0]}")
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))
