"""Tiling: coverage, exact blending for local operators, agreement with untiled runs, no seams."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.inference.tiling import blend_window, count_tiles, pad_to_multiple, tile_starts, tiled_apply


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(10, 16, 4), (16, 16, 4), (17, 16, 4), (100, 24, 8), (77, 8, 3)]
)
def test_tile_starts_cover_with_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and (starts[-1] + tile == length or length <= tile)
    for a, b in zip(starts, starts[1:]):
        assert 0 < b - a <= tile - overlap  # each neighbour pair overlaps by at least `overlap`


def test_tile_errors() -> None:
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_starts(100, 8, 8)
    with pytest.raises(ValueError, match="positive"):
        tile_starts(100, 0, 0)
    with pytest.raises(ValueError, match="gaussian"):
        blend_window(8, 2, 2, "box")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["gaussian", "linear"])
def test_blend_window_is_positive_and_ramps_only_inside_overlaps(kind: str) -> None:
    window = blend_window(20, 6, 0, kind)
    assert (window > 0).all() and torch.equal(window[6:], torch.ones(14))
    assert (window[:6].diff() > 0).all()


def _nearest_x2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


@pytest.mark.parametrize("window", ["gaussian", "linear"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_pointwise_operator_is_reproduced_exactly(window: str, batch_size: int) -> None:
    x = torch.rand(2, 3, 37, 29)
    out = tiled_apply(_nearest_x2, x, scale=2, tile=12, overlap=4, batch_size=batch_size, window=window)
    assert out.shape == (2, 3, 74, 58)
    assert torch.allclose(out, _nearest_x2(x), atol=1e-6)


def test_padding_to_multiple_and_min_size_is_cropped_back() -> None:
    calls = []

    def fixed_16(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[-2:]))
        return _nearest_x2(x)

    x = torch.rand(1, 3, 5, 3)
    out = tiled_apply(fixed_16, x, scale=2, tile=16, overlap=4, size_multiple=8, min_size=16)
    assert calls == [(16, 16)] and torch.allclose(out, _nearest_x2(x))
    assert pad_to_multiple(torch.rand(1, 3, 1, 1), 4).shape[-2:] == (4, 4)  # replicate for 1-px inputs
    assert pad_to_multiple(torch.rand(1, 3, 9, 10), 4).shape[-2:] == (12, 12)
    assert count_tiles(37, 29, 12, 4) == len(tile_starts(37, 12, 4)) * len(tile_starts(29, 12, 4))


def _seam_jump(image: torch.Tensor, columns: list[int]) -> float:
    """Mean absolute horizontal step across the given output columns."""
    return float(torch.stack([(image[..., c] - image[..., c - 1]).abs().mean() for c in columns]).mean())


def test_tiled_conv_net_agrees_with_untiled_and_has_no_seams() -> None:
    torch.manual_seed(0)
    model = SRVGGNetCompact(SRVGGConfig(num_feat=8, num_conv=3, upscale=2)).eval()
    yy, xx = torch.meshgrid(torch.linspace(0, 3, 48), torch.linspace(0, 4, 64), indexing="ij")
    x = torch.stack([torch.sin(xx + yy), torch.cos(xx - yy), torch.sin(2 * xx)])[None] * 0.4 + 0.5
    with torch.no_grad():
        full = model(x)
        tiled = tiled_apply(model, x, scale=2, tile=24, overlap=12)
        naive = tiled_apply(model, x, scale=2, tile=24, overlap=0)  # abutting tiles, no blending
    assert (tiled - full).abs().max() < 2e-2 and (tiled - full).abs().mean() < 1e-3
    # Steps across every place where a tile starts or ends, relative to the same columns untiled.
    starts = tile_starts(64, 24, 12)
    borders = sorted({2 * s for s in starts[1:]} | {2 * (s + 24) for s in starts[:-1]})
    # A seam is a step of the tiling error (tiled - untiled) across a tile border.
    image_step = _seam_jump(full, list(range(1, 128)))
    seam = _seam_jump(tiled - full, borders)
    assert seam < 0.01 * image_step
    naive_borders = [2 * s for s in tile_starts(64, 24, 0)[1:]]
    assert _seam_jump(naive - full, naive_borders) > 5 * seam  # the metric does see real seams
