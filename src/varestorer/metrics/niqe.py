"""NIQE (Mittal et al. 2013), the no-reference "naturalness" distance; lower is better.

Follows the LIVE MATLAB release (``computequality.m``), the reference for published NIQE numbers:

1. Luma on the 0-255 scale, rounded like MATLAB uint8 data: default ``convert_to="gray"`` (MATLAB
   ``rgb2gray``, as in the published reference values and close to pyiqa's YIQ luma); ``"y"``: BT.601
   YCbCr Y as BasicSR's ``calculate_niqe``. Optional border crop; cropped to whole 96x96 blocks.
2. Two scales (full, then MATLAB-bicubic half size). At each: MSCN = (I - mu) / (sigma + 1) with a
   7x7 Gaussian (sigma 7/6, replicate borders); per block (96 px, then 48 px), an asymmetric generalised
   Gaussian fit of the MSCN values (2 numbers) and of the four circular-shift pairwise products
   (4 numbers each): 18 per scale, 36 per block.
3. Mean and covariance of the block features vs the pristine model (asset ``niqe-pristine``):
   sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2) (mu_p - mu)).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

from varestorer.metrics.fidelity import rgb_to_y, to_float255
from varestorer.metrics.matlab_resize import imresize

# Euler's gamma on arrays: math.gamma is the same double-precision function scipy.special.gamma gives
# here, so NIQE/BRISQUE need no scipy (they are core metrics; scipy was their only extra dependency).
gamma_function = np.vectorize(math.gamma, otypes=[np.float64])

BLOCK = 96
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # MATLAB circshift offsets (rows, cols)


@lru_cache(maxsize=1)
def _gamma_grid() -> tuple[np.ndarray, np.ndarray]:
    grid = np.arange(0.2, 10.0 + 1e-9, 0.001)
    ratio = gamma_function(2 / grid) ** 2 / (gamma_function(1 / grid) * gamma_function(3 / grid))
    return grid, ratio


def aggd_fit(values: np.ndarray) -> tuple[float, float, float]:
    """(alpha, left_beta, right_beta) of an asymmetric generalised Gaussian, by moment matching on a grid."""
    grid, ratio = _gamma_grid()
    negative, positive = values[values < 0], values[values > 0]
    if negative.size == 0 or positive.size == 0:  # a flat block: MATLAB gives alpha=0.2 and NaN widths
        return float(grid[0]), math.nan, math.nan
    left, right = np.sqrt(np.mean(negative**2)), np.sqrt(np.mean(positive**2))
    gamma_hat = left / right
    r_hat = np.mean(np.abs(values)) ** 2 / np.mean(values**2)
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = float(grid[np.argmin((ratio - r_hat_norm) ** 2)])
    factor = np.sqrt(gamma_function(1 / alpha) / gamma_function(3 / alpha))
    return alpha, float(left * factor), float(right * factor)


def block_features(mscn_block: np.ndarray) -> list[float]:
    """The 18 NSS features of one MSCN block."""
    alpha, left, right = aggd_fit(mscn_block.reshape(-1))
    features = [alpha, (left + right) / 2]
    for shift in SHIFTS:
        pair = mscn_block * np.roll(mscn_block, shift, axis=(0, 1))
        alpha, left, right = aggd_fit(pair.reshape(-1))
        mean = (right - left) * gamma_function(2 / alpha) / gamma_function(1 / alpha)
        features += [alpha, mean, left, right]
    return features


def mscn(image_HW: np.ndarray, window: np.ndarray) -> np.ndarray:
    mu = cv2.filter2D(image_HW, -1, window, borderType=cv2.BORDER_REPLICATE)
    sigma = np.sqrt(np.abs(cv2.filter2D(image_HW * image_HW, -1, window, borderType=cv2.BORDER_REPLICATE) - mu * mu))
    return (image_HW - mu) / (sigma + 1)


def niqe_features(luma_HW: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(num_blocks, 36) features of a 0-255 luma image."""
    rows, cols = luma_HW.shape[0] // BLOCK, luma_HW.shape[1] // BLOCK
    if rows == 0 or cols == 0:
        raise ValueError(f"NIQE needs at least {BLOCK}x{BLOCK} pixels, got {luma_HW.shape[1]}x{luma_HW.shape[0]}")
    image = luma_HW[: rows * BLOCK, : cols * BLOCK].astype(np.float64)
    per_scale = []
    for scale in (1, 2):
        structure = mscn(image, window)
        size = BLOCK // scale
        per_scale.append(
            [
                block_features(structure[r * size : (r + 1) * size, c * size : (c + 1) * size])
                for c in range(cols)
                for r in range(rows)
            ]
        )
        image = imresize(image, 0.5)
    return np.concatenate([np.array(per_scale[0]), np.array(per_scale[1])], axis=1)


def load_pristine_model() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    from varestorer.assets.cache import asset_path

    return load_file(str(asset_path("niqe-pristine")))


def niqe(
    image: np.ndarray,
    *,
    crop_border: int = 0,
    convert_to: Literal["gray", "y"] = "gray",
    model: dict[str, np.ndarray] | None = None,
) -> float:
    """NIQE of one ``(H, W, 3)`` RGB image (uint8 or float in [0, 1]); lower is more natural.

    Raises:
        ValueError: bad shape/range, or smaller than 96x96 after cropping.
        AssetMissingError: the pristine model was not fetched.
    """
    model = model or load_pristine_model()
    rgb = to_float255(image)
    if crop_border:
        rgb = rgb[crop_border:-crop_border, crop_border:-crop_border]
    if convert_to == "y":
        luma = rgb_to_y(rgb)[..., 0]
    elif convert_to == "gray":
        luma = rgb @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])  # MATLAB rgb2gray
    else:
        raise ValueError(f"convert_to must be 'y' or 'gray', got {convert_to!r}")
    luma = np.round(luma)  # MATLAB works on uint8 luma
    features = niqe_features(luma, model["gaussian_window"])
    complete = features[~np.isnan(features).any(axis=1)]  # MATLAB nancov: complete rows only
    if complete.shape[0] < 2:
        blocks, (h, w) = features.shape[0], luma.shape
        if blocks < 2:
            raise ValueError(f"NIQE needs at least two 96x96 blocks, a {w}x{h} image has {blocks}")
        textured = complete.shape[0]
        raise ValueError(f"NIQE needs two 96x96 blocks with texture, {textured} of {blocks} have any (flat image?)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nanmean(features, axis=0)  # MATLAB nanmean: per column
    cov = np.cov(complete, rowvar=False)
    delta = model["mu"] - mu
    return float(np.sqrt(delta @ np.linalg.pinv((model["cov"] + cov) / 2) @ delta))
