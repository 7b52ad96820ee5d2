"""Overlapping tiles with feathered blending: pure tensor functions (no model imports).

A run over tiles is exact where it matters: the per-pixel normalisation is the outer product of
two 1-D weight sums (tiles form a full row x column grid, so the sum of ``wy(y) * wx(x)`` over tiles
factorises), so no full-size weight map is ever allocated. Only the output accumulator is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F

BlendWindow = Literal["gaussian", "linear"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``.

    The first tile starts at 0 and the last ends at ``length``; the others are spread evenly.
    """
    if tile <= 0 or overlap < 0:
        raise ValueError(f"tile must be positive and overlap non-negative, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    if overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile size {tile}")
    count = math.ceil((length - overlap) / (tile - overlap))
    count = max(count, 2)
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def blend_window(
    length: int, left_overlap: int, right_overlap: int, kind: BlendWindow = "gaussian", device=None
) -> torch.Tensor:
    """1-D blending weights ``(length,)`` for one tile, strictly positive.

    ``left_overlap``/``right_overlap`` are the pixels shared with the neighbour on that side (0 on
    the image border, which keeps weight 1 so the border is not attenuated). ``linear`` ramps across
    the overlap; ``gaussian`` uses a half-Gaussian over the same span (sigma = overlap / 3).
    """
    if kind not in ("gaussian", "linear"):
        raise ValueError(f"blend window must be 'gaussian' or 'linear', got {kind!r}")
    weights = torch.ones(length, dtype=torch.float32, device=device)
    for span, side in ((min(left_overlap, length), "left"), (min(right_overlap, length), "right")):
        if span <= 0:
            continue
        position = torch.arange(span, dtype=torch.float32, device=device) + 0.5  # pixel centres
        if kind == "linear":
            ramp = position / span
        else:
            ramp = torch.exp(-0.5 * ((span - position) / (span / 3)) ** 2)
        ramp = ramp.clamp_min(1e-3)
        if side == "left":
            weights[:span] = torch.minimum(weights[:span], ramp)
        else:
            weights[length - span :] = torch.minimum(weights[length - span :], ramp.flip(0))
    return weights


def pad_to_multiple(x_BCHW: torch.Tensor, multiple: int, min_size: int = 0) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple`` and at least ``min_size`` (reflect, else replicate)."""
    height, width = x_BCHW.shape[-2:]
    target_h = max(math.ceil(height / multiple) * multiple, min_size)
    target_w = max(math.ceil(width / multiple) * multiple, min_size)
    pad_h, pad_w = target_h - height, target_w - width
    if pad_h == 0 and pad_w == 0:
        return x_BCHW
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x_BCHW, (0, pad_w, 0, pad_h), mode=mode)


def _batches(items: list, size: int) -> Iterator[list]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def tiled_apply(
    fn: Callable[..., torch.Tensor],
    x_BCHW: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    batch_size: int = 1,
    window: BlendWindow = "gaussian",
    size_multiple: int = 1,
    min_size: int = 0,
    out_channels: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    tile_index: bool = False,
) -> torch.Tensor:
    """Run ``fn`` (an exact ``scale``-times upsampler) over overlapping tiles and blend the results.

    Args:
        fn: maps ``(b, C, h, w)`` to ``(b, C', scale*h, scale*w)``; called with up to ``batch_size``
            tiles at once, each padded to ``size_multiple`` and ``min_size`` (cropped back after).
        x_BCHW: input on the device ``fn`` expects; any dtype ``fn`` accepts.
        tile, overlap: tile size and minimum overlap in input pixels. One tile when the input fits.
        window: feathering of overlaps ("gaussian" or "linear").
        progress: ``progress(done_tiles, total_tiles)``, called with ``(0, total)`` before the first
            tile batch and after every tile batch (``total`` counts tiles of all ``B`` images).
        tile_index: call ``fn(tiles, indices)`` instead, ``indices[k]`` the k-th tile's index in its own
            image (row-major over that image's tile grid), e.g. to seed a sampler per tile position.

    Returns:
        ``(B, C', scale*H, scale*W)`` float32 on the input's device.
    """
    batch, _, height, width = x_BCHW.shape
    tile_h, tile_w = min(tile, height), min(tile, width)
    ys, xs = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    out_h, out_w = tile_h * scale, tile_w * scale
    device = x_BCHW.device

    def window_1d(starts: list[int], index: int, length: int) -> torch.Tensor:
        # Overlap actually shared with each neighbour, in output pixels.
        before = (starts[index - 1] + length - starts[index]) if index > 0 else 0
        after = (starts[index] + length - starts[index + 1]) if index + 1 < len(starts) else 0
        return blend_window(length * scale, before * scale, after * scale, window)

    wys = [window_1d(ys, i, tile_h).to(device) for i in range(len(ys))]
    wxs = [window_1d(xs, j, tile_w).to(device) for j in range(len(xs))]
    norm_y = torch.zeros(height * scale, device=device)
    norm_x = torch.zeros(width * scale, device=device)
    for i, y in enumerate(ys):
        norm_y[y * scale : y * scale + out_h] += wys[i]
    for j, x in enumerate(xs):
        norm_x[x * scale : x * scale + out_w] += wxs[j]

    output: torch.Tensor | None = None
    jobs = [(b, i, j) for b in range(batch) for i in range(len(ys)) for j in range(len(xs))]
    done = 0
    if progress is not None:
        progress(0, len(jobs))
    for group in _batches(jobs, max(1, batch_size)):
        tiles = torch.cat([x_BCHW[b : b + 1, :, ys[i] : ys[i] + tile_h, xs[j] : xs[j] + tile_w] for b, i, j in group])
        padded = pad_to_multiple(tiles, size_multiple, min_size)
        result = fn(padded, [i * len(xs) + j for _, i, j in group]) if tile_index else fn(padded)
        result = result[..., :out_h, :out_w].float()
        if result.shape[-2:] != (out_h, out_w):
            raise ValueError(f"model returned {tuple(result.shape[-2:])} for a {tile_h}x{tile_w} tile at x{scale}")
        if output is None:
            channels = out_channels or result.shape[1]
            output = torch.zeros(batch, channels, height * scale, width * scale, device=device)
        for (b, i, j), piece in zip(group, result):
            weight = wys[i][:, None] * wxs[j][None, :]
            y0, x0 = ys[i] * scale, xs[j] * scale
            output[b, :, y0 : y0 + out_h, x0 : x0 + out_w].addcmul_(piece, weight)
        done += len(group)
        if progress is not None:
            progress(done, len(jobs))
    assert output is not None
    output /= norm_y[:, None]  # the weight sum factorises: two 1-D divisions, no full-size map
    output /= norm_x[None, :]
    return output


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    """Number of tiles ``tiled_apply`` runs for one ``height x width`` image."""
    return len(tile_starts(height, min(tile, height), overlap)) * len(tile_starts(width, min(tile, width), overlap))
