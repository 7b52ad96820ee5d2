"""Token statistics per scale: are the bits a tokenizer emits image structure or noise?

For each scale k of a schedule, over every token of every image seen:

- ``ones_fraction``: mean bit value (0.5 = balanced bits; near 0 or 1 = bits that carry little);
  ``bit_ones_min``/``bit_ones_max`` are the most unbalanced of the d bit channels.
- ``flip_horizontal`` / ``flip_vertical``: how often a bit differs between horizontally /
  vertically neighbouring tokens of that scale's map (0 = flat maps, 0.5 = uncorrelated noise).
  A codebook quantizer's labels are indices: there it is how often the index changes.
- ``residual_norm``: the quantizer's ``residual_norms[k]``, the mean over latent positions of
  ``||f - f_hat||`` after scales 1..k (in the latent space the quantizer works in).

Pure tensor code: it only calls a tokenizer's ``tokenize`` (any family with that interface).
Everything is accumulated as counts, so statistics over many images or tiles combine exactly
(weighted by tokens, neighbour pairs and latent positions), whatever the batch split.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from varestorer.tokenizer.quantizer import MultiScaleTokens
from varestorer.tokenizer.scales import Schedule


class _Tokenizer(Protocol):
    stride: int

    def tokenize(self, x_B3HW: Tensor, schedule: Schedule | None = None) -> MultiScaleTokens: ...

    def default_schedule(self, height_px: int, width_px: int) -> Schedule: ...


@dataclass(frozen=True)
class ScaleStatistics:
    """Statistics of one scale (see the module docstring for the definitions)."""

    index: int
    """k, 0-based, coarse first."""
    grid: tuple[int, int] | None
    """(h, w) token grid of this scale; None when the inputs used different grids at this index."""
    tokens: int
    """Tokens counted (over all images and tiles)."""
    ones_fraction: float | None
    """Mean bit value; None for codebook (index) labels."""
    bit_ones_min: float | None
    """Smallest per-bit-channel fraction of ones; None for codebook labels."""
    bit_ones_max: float | None
    """Largest per-bit-channel fraction of ones; None for codebook labels."""
    flip_horizontal: float | None
    """Fraction of bits (indices) that differ from the token to the right; None when w == 1."""
    flip_vertical: float | None
    """Fraction of bits (indices) that differ from the token below; None when h == 1."""
    residual_norm: float | None
    """Mean over latent positions of ||f - f_hat|| after this scale; None if the quantizer gave none."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["grid"] = list(self.grid) if self.grid is not None else None
        return out


class _ScaleCounts:
    def __init__(self) -> None:
        self.grids: set[tuple[int, int]] = set()
        self.tokens = 0
        self.ones: Tensor | None = None  # (d,) float64 sums of bits per channel
        self.flips = [0.0, 0.0]  # horizontal, vertical: differing bits (or labels)
        self.pairs = [0, 0]  # compared bits (or labels)
        self.residual_sum = 0.0
        self.residual_weight = 0


class TokenStatistics:
    """Accumulator: :meth:`add` the tokens of each batch, then :meth:`result`."""

    def __init__(self) -> None:
        self._scales: list[_ScaleCounts] = []

    def add(self, tokens: MultiScaleTokens, schedule: Schedule) -> None:
        """Count one batch's tokens (labels (B, h*w, d) bits, or (B, h*w) codebook indices)."""
        if len(tokens.labels) != len(schedule):
            raise ValueError(f"got labels for {len(tokens.labels)} scales, schedule has {len(schedule)}")
        grid_positions = tokens.f_hat.shape[0] * tokens.f_hat.shape[-2] * tokens.f_hat.shape[-1]
        while len(self._scales) < len(schedule):
            self._scales.append(_ScaleCounts())
        for k, (labels, (h, w)) in enumerate(zip(tokens.labels, schedule)):
            counts = self._scales[k]
            counts.grids.add((int(h), int(w)))
            B = labels.shape[0]
            if labels.shape[1] != h * w:
                raise ValueError(f"scale {k}: {labels.shape[1]} labels do not fill a {h}x{w} grid")
            grid_Bhwd = labels.reshape(B, h, w, -1) if labels.ndim == 3 else labels.reshape(B, h, w, 1)
            counts.tokens += B * h * w
            if labels.ndim == 3:
                ones = grid_Bhwd.flatten(0, 2).sum(dim=0, dtype=torch.float64).cpu()
                counts.ones = ones if counts.ones is None else counts.ones + ones
            for axis, (a, b) in enumerate(
                ((grid_Bhwd[:, :, 1:], grid_Bhwd[:, :, :-1]), (grid_Bhwd[:, 1:], grid_Bhwd[:, :-1]))
            ):
                if a.numel():
                    counts.flips[axis] += float((a != b).sum())
                    counts.pairs[axis] += a.numel()
            if k < len(tokens.residual_norms):
                counts.residual_sum += float(tokens.residual_norms[k]) * grid_positions
                counts.residual_weight += grid_positions

    def merge(self, other: TokenStatistics) -> None:
        """Add the counts of ``other`` (e.g. one image's, once it succeeded) to these."""
        while len(self._scales) < len(other._scales):
            self._scales.append(_ScaleCounts())
        for mine, theirs in zip(self._scales, other._scales):
            mine.grids |= theirs.grids
            mine.tokens += theirs.tokens
            if theirs.ones is not None:
                mine.ones = theirs.ones.clone() if mine.ones is None else mine.ones + theirs.ones
            mine.flips = [a + b for a, b in zip(mine.flips, theirs.flips)]
            mine.pairs = [a + b for a, b in zip(mine.pairs, theirs.pairs)]
            mine.residual_sum += theirs.residual_sum
            mine.residual_weight += theirs.residual_weight

    def result(self) -> list[ScaleStatistics]:
        """One :class:`ScaleStatistics` per scale index seen."""
        out = []
        for k, counts in enumerate(self._scales):
            ones = counts.ones / (counts.tokens or 1) if counts.ones is not None else None
            flips = [f / p if p else None for f, p in zip(counts.flips, counts.pairs)]
            out.append(
                ScaleStatistics(
                    index=k,
                    grid=next(iter(counts.grids)) if len(counts.grids) == 1 else None,
                    tokens=counts.tokens,
                    ones_fraction=float(ones.mean()) if ones is not None else None,
                    bit_ones_min=float(ones.min()) if ones is not None else None,
                    bit_ones_max=float(ones.max()) if ones is not None else None,
                    flip_horizontal=flips[0],
                    flip_vertical=flips[1],
                    residual_norm=counts.residual_sum / counts.residual_weight if counts.residual_weight else None,
                )
            )
        return out


@torch.no_grad()
def token_statistics(
    tokenizer: _Tokenizer, images: Tensor | Iterable[Tensor], schedule: Schedule | None = None
) -> list[ScaleStatistics]:
    """Per-scale bit statistics of ``tokenizer`` on ``images``.

    Args:
        tokenizer: anything with ``tokenize(x in [-1, 1], schedule)`` and ``default_schedule(H, W)``.
        images: a (B, 3, H, W) tensor, or an iterable of (B, 3, H, W) or (3, H, W) tensors, float in
            [0, 1]; H and W multiples of ``tokenizer.stride``. Moved to the tokenizer's device.
        schedule: the scales to quantize over; default ``tokenizer.default_schedule(H, W)`` of
            each batch (then batches of different sizes count their k-th scales together, and
            ``grid`` is None where they differ).

    Returns:
        One :class:`ScaleStatistics` per scale, coarse first.
    """
    batches = [images] if isinstance(images, Tensor) else images
    parameter = next(iter(tokenizer.parameters()), None) if isinstance(tokenizer, torch.nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    accumulator = TokenStatistics()
    for batch in batches:
        x = batch[None] if batch.ndim == 3 else batch
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(batch.shape)}")
        if x.shape[-2] % tokenizer.stride or x.shape[-1] % tokenizer.stride:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the stride {tokenizer.stride}")
        used = schedule or tokenizer.default_schedule(x.shape[-2], x.shape[-1])
        tokens = tokenizer.tokenize(x.to(device, torch.float32) * 2 - 1, used)
        accumulator.add(tokens, used)
    return accumulator.result()


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_statistics(stats: list[ScaleStatistics]) -> str:
    """A plain-text table, one row per scale."""
    header = f"{'scale':>5} {'grid':>9} {'tokens':>9} {'ones':>6} {'bit min':>7} {'bit max':>7} "
    header += f"{'flip h':>6} {'flip v':>6} {'residual':>8}"
    rows = [header]
    for s in stats:
        grid = f"{s.grid[0]}x{s.grid[1]}" if s.grid is not None else "mixed"
        rows.append(
            f"{s.index + 1:>5} {grid:>9} {s.tokens:>9} {_cell(s.ones_fraction):>6} {_cell(s.bit_ones_min):>7} "
            f"{_cell(s.bit_ones_max):>7} {_cell(s.flip_horizontal):>6} {_cell(s.flip_vertical):>6} "
            f"{_cell(s.residual_norm, 4):>8}"
        )
    return "\n".join(rows)


__all__ = ["ScaleStatistics", "TokenStatistics", "format_statistics", "token_statistics"]
