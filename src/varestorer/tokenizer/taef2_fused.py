"""Exact inference shortcuts for the TAEF2 halves without their full-resolution Blocks (the lite tokenizer).

Without the Block at image resolution, each half has two 3x3 convolutions in a row with nothing between them,
at the most expensive resolution:

    decoder tail: F (C, h, w) -> up x2 (nearest) -> conv 17 (C -> C) -> conv 19 (C -> 3)   at 2h x 2w
    encoder head: x (3, H, W) -> conv 0 (3 -> C) -> conv 2 (C -> C, stride 2)            at H x W

Two linear maps compose into one: conv 19 after conv 17 is one 5x5 conv C -> 3, and a 5x5 conv over a nearest
x2 upsample is, per output phase (a, b), a 3x3 conv over F itself, so the decoder tail becomes one 3x3 conv
C -> 12 at h x w and a pixel shuffle (2.5 GMAC -> 0.11 GMAC at 256 px). Conv 2 after conv 0 is one 5x5 conv
3 -> C with stride 2 (0.72 -> 0.08 GMAC at 256 px).

The composition alone differs from the two convs on the one-pixel ring of the image border: the second conv
zero-pads the first one's output, while the composed kernel sees the first conv evaluated one pixel beyond the
border. That ring (one row or column per side, cheap 1-D convolutions) is computed and its contribution taken
off the border pixels, so the result equals the two convolutions up to float rounding.

Used in inference only (no gradient); training runs the layers as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _is_conv3x3(layer: nn.Module, stride: int) -> bool:
    return (
        isinstance(layer, nn.Conv2d)
        and layer.kernel_size == (3, 3)
        and layer.stride == (stride, stride)
        and layer.padding == (1, 1)
        and layer.dilation == (1, 1)
        and layer.groups == 1
        and layer.padding_mode == "zeros"
    )


# Where each pair of taps lands (fixed index maps, built once): tap (dy, dx) of the second conv after tap
# (ey, ex) of the first is tap (dy + ey, dx + ex) of the composed 5x5 kernel.
_COMPOSED = [(dy + ey) * 5 + dx + ex for dy in range(3) for dx in range(3) for ey in range(3) for ex in range(3)]
# Decoder phase (a, b) reads 5x5 tap (ty, tx) at 3x3 tap ((a + ty - 2) // 2 + 1, (b + tx - 2) // 2 + 1) of f.
_UP_PHASES = [
    (2 * a + b) * 9 + ((a + ty - 2) // 2 + 1) * 3 + (b + tx - 2) // 2 + 1
    for a in range(2)
    for b in range(2)
    for ty in range(5)
    for tx in range(5)
]
# Encoder: 5x5 stride-2 tap (ty, tx) is phase (ty % 2, tx % 2), 3x3 tap (ty // 2, tx // 2) of the space-to-depth input.
_DOWN_PHASES = [(ty % 2 * 2 + tx % 2) * 9 + ty // 2 * 3 + tx // 2 for ty in range(5) for tx in range(5)]


def _index(positions: list[int], like: Tensor) -> Tensor:
    return torch.tensor(positions, device=like.device)


def compose_kernels(second: Tensor, first: Tensor) -> Tensor:
    """``conv(conv(x, first), second)`` as one kernel: (O, M, 3, 3) after (M, I, 3, 3) -> (O, I, 5, 5)."""
    pairs = torch.einsum("omd,mie->oide", second.flatten(2), first.flatten(2))  # (O, I, 9, 9)
    out = pairs.new_zeros(second.shape[0], first.shape[1], 25)  # pairs' dtype: bf16 under CPU autocast
    return out.index_add_(2, _index(_COMPOSED, out), pairs.flatten(2)).view(*out.shape[:2], 5, 5)


def _bias(conv: nn.Conv2d, like: Tensor) -> Tensor:
    return conv.bias if conv.bias is not None else like.new_zeros(conv.out_channels)


def _outer_ring(edges: tuple[Tensor, Tensor, Tensor, Tensor], first: nn.Conv2d) -> tuple[Tensor, ...]:
    """``first`` (3x3, stride 1, zero padding) evaluated one pixel outside an H x W input's border.

    Args:
        edges: the input's first and last rows (B, I, 1, W) and first and last columns (B, I, H, 1).

    Returns:
        the top and bottom rows (B, M, 1, W + 2), corners included, and the left and right columns (B, M, H, 1).
    """
    top, bottom, left, right = edges
    w, b = first.weight, first.bias
    return (
        F.conv2d(top, w[:, :, 2:3], b, padding=(0, 2)),
        F.conv2d(bottom, w[:, :, 0:1], b, padding=(0, 2)),
        F.conv2d(left, w[..., 2:3], b, padding=(1, 0)),
        F.conv2d(right, w[..., 0:1], b, padding=(1, 0)),
    )


def fused_decoder_tail(f: Tensor, first: nn.Conv2d, second: nn.Conv2d) -> Tensor:
    """``second(first(nearest_x2(f)))`` for two 3x3 stride-1 convs, computed at f's resolution.

    Args:
        f: (B, C, h, w) features.

    Returns:
        (B, O, 2h, 2w), equal to the three layers up to float rounding.
    """
    kernel = compose_kernels(second.weight, first.weight)  # (O, C, 5, 5) over the upsampled map
    bias = _bias(second, f) + second.weight.sum((2, 3)) @ _bias(first, f)
    # Output pixel (2i + a, 2j + b) reads upsampled row 2i + a + t (t in -2..2), i.e. f's row i + (a + t) // 2.
    O, C = kernel.shape[:2]
    taps = kernel.flatten(2).repeat(1, 1, 4)  # (O, C, 4 phases x 25 taps)
    phases = kernel.new_zeros(O, C, 36).index_add_(2, _index(_UP_PHASES, kernel), taps)
    phases = phases.view(O, C, 4, 3, 3).transpose(1, 2).reshape(O * 4, C, 3, 3)  # channel o * 4 + 2a + b
    z = F.pixel_shuffle(F.conv2d(f, phases, bias.repeat_interleave(4), padding=1), 2)
    # `second` zero-pads `first`'s output; the composed kernel read `first` one pixel beyond: take that off.
    edges = (
        f[:, :, :1].repeat_interleave(2, dim=3),
        f[:, :, -1:].repeat_interleave(2, dim=3),
        f[..., :1].repeat_interleave(2, dim=2),
        f[..., -1:].repeat_interleave(2, dim=2),
    )
    top, bottom, left, right = _outer_ring(edges, first)
    w2 = second.weight
    z[:, :, :1] -= F.conv2d(top, w2[:, :, :1])
    z[:, :, -1:] -= F.conv2d(bottom, w2[:, :, 2:])
    z[..., :1] -= F.conv2d(left, w2[..., :1], padding=(1, 0))
    z[..., -1:] -= F.conv2d(right, w2[..., 2:], padding=(1, 0))
    return z


def fused_encoder_head(x: Tensor, first: nn.Conv2d, second: nn.Conv2d) -> Tensor:
    """``second(first(x))`` for a 3x3 stride-1 ``first`` and a 3x3 stride-2 ``second``, as one 5x5 stride-2 conv.

    Args:
        x: (B, I, H, W) with H and W even (``second`` then never reads past the bottom or right border).

    Returns:
        (B, O, H/2, W/2), equal to the two convs up to float rounding.
    """
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"fused_encoder_head needs an even height and width, got {tuple(x.shape[-2:])}")
    kernel = compose_kernels(second.weight, first.weight)  # (O, I, 5, 5), stride 2
    bias = _bias(second, x) + second.weight.sum((2, 3)) @ _bias(first, x)
    # As a 3x3 conv over the 2x2 space-to-depth of x: offset t (-2..2) of output row i is phase (t % 2) of
    # row i + t // 2 there (a 5x5 stride-2 conv with 3 input channels is slow in oneDNN; this is not).
    O, I = kernel.shape[:2]
    phased = kernel.new_zeros(O, I, 36).index_copy_(2, _index(_DOWN_PHASES, kernel), kernel.flatten(2))
    z = F.conv2d(F.pixel_unshuffle(x, 2), phased.view(O, I * 4, 3, 3), bias, padding=1)  # channel i * 4 + 2a + b
    edges = (x[:, :, :1], x[:, :, -1:], x[..., :1], x[..., -1:])
    top, _, left, _ = _outer_ring(edges, first)  # stride 2 never reads the ring below or right of an even size
    w2 = second.weight
    z[:, :, :1] -= F.conv2d(top, w2[:, :, :1], stride=(1, 2))
    z[..., :1] -= F.conv2d(left, w2[..., :1], stride=(2, 1), padding=(1, 0))
    return z


def decoder_tail_fusable(net: nn.Sequential) -> bool:
    """True when ``net`` ends in nearest x2 up, 3x3 conv, identity, 3x3 conv (a decoder without its last Block)."""
    if len(net) < 4:
        return False
    up, first, between, second = (net[i] for i in range(len(net) - 4, len(net)))
    return (
        isinstance(up, nn.Upsample)
        and up.mode == "nearest"
        and up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
        and up.size is None
        and _is_conv3x3(first, 1)
        and isinstance(between, nn.Identity)
        and _is_conv3x3(second, 1)
    )


def encoder_head_fusable(net: nn.Sequential) -> bool:
    """True when ``net`` starts with 3x3 conv, identity, 3x3 stride-2 conv (an encoder without its Block at H x W)."""
    if len(net) < 3:
        return False
    first, between, second = (net[i] for i in range(3))
    return _is_conv3x3(first, 1) and isinstance(between, nn.Identity) and _is_conv3x3(second, 2)


__all__ = [
    "compose_kernels",
    "decoder_tail_fusable",
    "encoder_head_fusable",
    "fused_decoder_tail",
    "fused_encoder_head",
]
