"""BRISQUE (Mittal et al. 2012) with OpenCV's LIVE-R2 model; no-reference, 0 (best) to 100 (worst).

A numpy port of OpenCV contrib's ``cv::quality::QualityBRISQUE`` (``cv2.quality`` is not needed):

1. Gray (``cv2.cvtColor`` of the 8-bit RGB image, i.e. rounded BT.601 luma) scaled to [0, 1]. We compute
   in float64: OpenCV works in float32, where the local variance E[I^2] - E[I]^2 cancels to negative
   values on a few percent of pixels (their sqrt is NaN and drops out of the fits), which moves its
   scores by up to ~2 points on some images; see tests/test_metrics_calibration.py for the agreement.
2. Two scales (the image, then ``cv2.resize`` bicubic to half size). At each: MSCN with a 7x7 Gaussian
   (sigma 7/6, replicate borders), sigma + 1/255; an asymmetric generalised Gaussian fit (OpenCV's
   variant: first local minimum of the moment-ratio mismatch from 0.2 upwards in steps of 0.001) of the
   MSCN values and of the products with the H, V, D1, D2 neighbours (zero outside the image): 18 per scale.
3. Features linearly scaled to [-1, 1] with the stored ranges, then the epsilon-SVR with an RBF kernel:
   score = sum_i alpha_i exp(-gamma |x - sv_i|^2) - rho, clamped to [0, 100]. Model: asset ``brisque-live``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # (row, col) neighbour offsets: H, V, D1, D2


def aggd_fit(values: np.ndarray) -> tuple[float, float, float]:
    """(gamma, left_sigma, right_sigma) as OpenCV's ``AGGDfit`` (counts of nonzero values per side)."""
    values = values.astype(np.float64).reshape(-1)
    negative, positive = values[values < 0], values[values > 0]
    negative_sq, positive_sq = float(np.sum(negative**2)), float(np.sum(positive**2))
    left = math.sqrt(negative_sq / max(negative.size, 1))
    right = math.sqrt(positive_sq / max(positive.size, 1))
    gamma_hat = left / right if right > 0 else math.inf
    total = values.size
    absolute = float(np.sum(positive) - np.sum(negative))
    r_hat = (absolute / total) ** 2 / max((negative_sq + positive_sq) / total, 1e-300)
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    grid, ratio = _grid()
    diffs = np.abs(ratio - r_hat_norm)
    rising = np.nonzero(diffs[1:] > diffs[:-1])[0]  # the scan stops at the first increase
    stop = int(rising[0]) if rising.size else grid.size - 1
    return float(grid[stop]), left, right


@lru_cache(maxsize=1)
def _grid() -> tuple[np.ndarray, np.ndarray]:
    grid = 0.2 + 0.001 * np.arange(9800)  # 0.2 ... 9.999, OpenCV's scan
    gamma = np.vectorize(math.gamma, otypes=[np.float64])  # as scipy.special.gamma, without scipy
    ratio = gamma(2 / grid) ** 2 / (gamma(1 / grid) * gamma(3 / grid))
    return grid, ratio


def _shifted(structure: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    out = np.zeros_like(structure)
    rows, cols = structure.shape
    dr, dc = shift
    out[max(0, -dr) : rows - max(0, dr), max(0, -dc) : cols - max(0, dc)] = structure[
        max(0, dr) : rows - max(0, -dr), max(0, dc) : cols - max(0, -dc)
    ]
    return out


def brisque_features(gray01_HW: np.ndarray) -> np.ndarray:
    """(36,) float32 BRISQUE features of a float64 gray image in [0, 1]."""
    features: list[float] = []
    height, width = gray01_HW.shape
    for level in (0, 1):
        size = (int(width / 2**level), int(height / 2**level))
        image = cv2.resize(gray01_HW, size, interpolation=cv2.INTER_CUBIC) if level else gray01_HW
        mu = cv2.GaussianBlur(image, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
        sigma = cv2.GaussianBlur(image * image, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
        sigma = np.sqrt(np.abs(sigma - mu * mu)) + 1 / 255
        structure = (image - mu) / sigma
        shape, left, right = aggd_fit(structure)
        features += [shape, (left * left + right * right) / 2]
        for shift in SHIFTS:
            pair = structure * _shifted(structure, shift)
            shape, left, right = aggd_fit(pair)
            constant = math.sqrt(math.gamma(1 / shape)) / math.sqrt(math.gamma(3 / shape))
            mean = (right - left) * (math.gamma(2 / shape) / math.gamma(1 / shape)) * constant
            features += [shape, mean, left**2, right**2]
    return np.array(features, dtype=np.float32)


def load_model() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    from varestorer.assets.cache import asset_path

    return load_file(str(asset_path("brisque-live")))


def svr_score(features: np.ndarray, model: dict[str, np.ndarray]) -> float:
    """Scale features to [-1, 1] with the model ranges and evaluate the RBF epsilon-SVR."""
    low, high = model["feature_min"].astype(np.float64), model["feature_max"].astype(np.float64)
    x = -1 + 2 * (features.astype(np.float64) - low) / (high - low)
    distances = np.sum((model["support_vectors"].astype(np.float64) - x) ** 2, axis=1)
    value = float(np.sum(model["alpha"] * np.exp(-model["gamma"][0] * distances)) - model["rho"][0])
    return min(max(value, 0.0), 100.0)


def brisque(image: np.ndarray, *, model: dict[str, np.ndarray] | None = None) -> float:
    """BRISQUE score of one ``(H, W, 3)`` RGB image (uint8, or float in [0, 1] rounded to 8 bits).

    Raises:
        ValueError: bad shape/range, or smaller than 16x16.
        AssetMissingError: the model was not fetched.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"BRISQUE: expected an (H, W, 3) RGB array, got shape {image.shape}")
    if min(image.shape[:2]) < 16:
        raise ValueError(f"BRISQUE needs at least 16x16 pixels, got {image.shape[1]}x{image.shape[0]}")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating) or image.min() < -1e-6 or image.max() > 1 + 1e-6:
            raise ValueError(f"BRISQUE: expected uint8 or float in [0, 1], got {image.dtype}")
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float64) / 255
    return svr_score(brisque_features(gray), model or load_model())
