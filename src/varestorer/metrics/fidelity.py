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

Two protocols differ in three details (``protocol=``):

* ``"basicsr"`` (the default here; BasicSR's ``calculate_psnr``/``calculate_ssim``, scikit-image's
  Gaussian SSIM): float Y, the SSIM map as defined, PSNR of identical images ``inf``.
* ``"pyiqa"`` (what the real-world SR papers' tables use: pyiqa's ``psnr``/``ssim`` with
  ``test_y_channel=True, color_space="ycbcr"``, e.g. OSEDiff's logged scores): SSIM reads Y **rounded to
  integers** (MATLAB's uint8 ``rgb2ycbcr``) and clips the contrast-structure term at zero before the
  product (pyiqa's ``F.relu(cs_map)``); PSNR is ``10 log10(1 / (MSE + 1e-8))`` with MSE on the [0, 1]
  scale, so identical images give 80 dB and very close ones a little less than the exact value
  (47.6 dB: -0.0025 dB). Measured on OSEDiff's 93 DRealSR outputs (``docs/default_model.md``), this
  matches the authors' per-image PSNR within 1e-5 dB and SSIM within 1.3e-6; ``"basicsr"`` differs
  from them by up to 0.0065 SSIM and 0.0025 dB.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Protocol = Literal["basicsr", "pyiqa"]
PROTOCOLS: tuple[Protocol, ...] = ("basicsr", "pyiqa")
PYIQA_PSNR_EPS = 1e-8  # added to the MSE on the [0, 1] scale (pyiqa's ``psnr(eps=1e-8)``)
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


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


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


def psnr(
    pred: np.ndarray, gt: np.ndarray, *, crop_border: int = 0, y_channel: bool = True, protocol: Protocol = "basicsr"
) -> float:
    """PSNR in dB (higher is better) of two same-size RGB images; Y channel by default."""
    _check_protocol(protocol)
    a, b = _prepare(pred, gt, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if protocol == "pyiqa":
        return float(-10.0 * np.log10(mse / 255.0**2 + PYIQA_PSNR_EPS))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _ssim_channel(a_HW: np.ndarray, b_HW: np.ndarray, *, clip_structure: bool = False) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = kernel @ kernel.T

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]  # "valid" windows only

    mu_a, mu_b = blur(a_HW), blur(b_HW)
    var_a = blur(a_HW * a_HW) - mu_a**2
    var_b = blur(b_HW * b_HW) - mu_b**2
    cov = blur(a_HW * b_HW) - mu_a * mu_b
    structure = (2 * cov + c2) / (var_a + var_b + c2)
    if clip_structure:
        structure = np.maximum(structure, 0.0)
    ssim_map = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * structure
    return float(ssim_map.mean())


def ssim(
    pred: np.ndarray, gt: np.ndarray, *, crop_border: int = 0, y_channel: bool = True, protocol: Protocol = "basicsr"
) -> float:
    """SSIM in [-1, 1] (``"pyiqa"``: [0, 1]; higher is better); Y channel by default, else the mean over R, G, B.

    Raises:
        ValueError: shapes differ, the (cropped) image is smaller than the 11x11 window, or an unknown protocol.
    """
    _check_protocol(protocol)
    a, b = _prepare(pred, gt, crop_border, y_channel)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {a.shape[1]}x{a.shape[0]}")
    if protocol == "pyiqa" and y_channel:
        a, b = np.round(a), np.round(b)
    clip = protocol == "pyiqa"
    return float(np.mean([_ssim_channel(a[..., c], b[..., c], clip_structure=clip) for c in range(a.shape[2])]))
