"""MATLAB ``imresize`` (bicubic, antialiased when shrinking) as separable weight matrices, in float64.

Needed where a metric's published values were produced in MATLAB (NIQE's half-size second scale).
Boundary handling is MATLAB's symmetric mirror; no rounding (float input stays float).
"""

from __future__ import annotations

import math

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_weights(in_length: int, out_length: int, scale: float) -> np.ndarray:
    """(out_length, in_length) matrix W with ``out = W @ in`` along one axis."""
    kernel_width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if scale < 1 else _cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    columns = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    matrix = np.zeros((out_length, in_length))
    np.add.at(matrix, (np.repeat(np.arange(out_length), taps), columns.reshape(-1)), weights.reshape(-1))
    return matrix


def imresize(image_HW: np.ndarray, scale: float) -> np.ndarray:
    """Resize a 2-D float image by ``scale`` like MATLAB ``imresize(image, scale)`` (bicubic)."""
    if image_HW.ndim != 2:
        raise ValueError(f"imresize expects a 2-D image, got shape {image_HW.shape}")
    height, width = image_HW.shape
    out_h, out_w = math.ceil(height * scale), math.ceil(width * scale)
    rows = resize_weights(height, out_h, scale)
    cols = resize_weights(width, out_w, scale)
    return rows @ image_HW.astype(np.float64) @ cols.T
