"""Per-scale token statistics on inputs whose statistics are known by construction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.quantizer import BitwiseQuantizer, MultiScaleTokens
from varestorer.tokenizer.statistics import TokenStatistics, format_statistics, token_statistics


class PoolingTokenizer(torch.nn.Module):
    """A tokenizer whose latent is known: average-pooled pixels, shifted per channel, stride 4."""

    stride = 4

    def __init__(self, offsets: list[float]) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.tensor(offsets).view(1, -1, 1, 1))
        self.quantizer = BitwiseQuantizer(len(offsets))

    def default_schedule(self, height_px: int, width_px: int):
        return ((1, 1), (2, 2), (height_px // 4, width_px // 4))

    def tokenize(self, x_B3HW, schedule=None):
        f = F.avg_pool2d(x_B3HW.mean(dim=1, keepdim=True), self.stride) + self.offsets
        return self.quantizer.quantize(f, schedule)


def _tokens(labels: list[torch.Tensor], norms: list[float], grid=(4, 4)) -> MultiScaleTokens:
    batch, dim = labels[0].shape[0], labels[0].shape[-1] if labels[0].ndim == 3 else 1
    f_hat = torch.zeros(batch, dim, *grid)
    return MultiScaleTokens(f_hat, labels, torch.zeros(batch, 0, dim), norms)


def test_constant_image_has_no_flips_and_known_bits() -> None:
    offsets = [0.5, -0.5, 0.5, 0.5]
    tokenizer = PoolingTokenizer(offsets)
    image = torch.full((2, 3, 16, 16), 0.5)  # in [-1, 1]: 0, so f is exactly the offsets everywhere
    stats = token_statistics(tokenizer, image)
    assert [s.grid for s in stats] == [(1, 1), (2, 2), (4, 4)]
    assert [s.tokens for s in stats] == [2, 8, 32]
    assert stats[0].ones_fraction == pytest.approx(0.75)
    assert (stats[0].bit_ones_min, stats[0].bit_ones_max) == (0.0, 1.0)
    assert stats[0].flip_horizontal is None and stats[0].flip_vertical is None  # a 1x1 map has no neighbours
    for s in stats[1:]:
        assert s.flip_horizontal == 0.0 and s.flip_vertical == 0.0
    # After scale 1: f - sign(f)/sqrt(d) per position, the same everywhere.
    q = torch.tensor([1.0, -1.0, 1.0, 1.0]) / 2
    assert stats[0].residual_norm == pytest.approx(float((torch.tensor(offsets) - q).norm()), abs=1e-6)


def test_checkerboard_bits_flip_everywhere_and_stripes_only_across() -> None:
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    checker = ((ys + xs) % 2).reshape(1, 24, 1).expand(1, 24, 3)
    stripes = (xs % 2).reshape(1, 24, 1).expand(1, 24, 3)  # columns alternate, rows repeat
    accumulator = TokenStatistics()
    accumulator.add(_tokens([checker, stripes], [0.5, 0.25], (4, 6)), ((4, 6), (4, 6)))
    first, second = accumulator.result()
    assert first.flip_horizontal == 1.0 and first.flip_vertical == 1.0
    assert second.flip_horizontal == 1.0 and second.flip_vertical == 0.0
    assert first.ones_fraction == 0.5 and second.residual_norm == 0.25


def test_codebook_labels_count_index_changes_and_have_no_ones() -> None:
    labels = torch.tensor([[3, 3, 5, 5]])  # a 2x2 map: rows (3, 3) and (5, 5)
    accumulator = TokenStatistics()
    accumulator.add(_tokens([labels], []), ((2, 2),))
    (stats,) = accumulator.result()
    assert stats.ones_fraction is None and stats.residual_norm is None
    assert stats.flip_horizontal == 0.0 and stats.flip_vertical == 1.0


def test_batches_combine_exactly_and_mixed_grids_are_marked() -> None:
    tokenizer = MultiScaleTokenizer.from_preset("tiny").eval()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    whole = token_statistics(tokenizer, images)
    split = token_statistics(tokenizer, [images[:1], images[1:]])
    for a, b in zip(whole, split):
        for field in ("tokens", "ones_fraction", "flip_horizontal", "flip_vertical", "residual_norm"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), abs=1e-6), field
    mixed = token_statistics(tokenizer, [torch.rand(3, 64, 64), torch.rand(1, 3, 48, 48)])
    assert mixed[0].grid == (1, 1) and mixed[-1].grid is None  # 4x4 vs 3x3 at the last scale
    assert mixed[-1].tokens == 16 + 9
    assert 0.0 <= mixed[-1].ones_fraction <= 1.0
    table = format_statistics(mixed)
    assert "mixed" in table and len(table.splitlines()) == len(mixed) + 1
    assert all(math.isfinite(v) for v in mixed[-1].to_dict().values() if isinstance(v, float))


def test_bad_input_is_a_value_error() -> None:
    tokenizer = MultiScaleTokenizer.from_preset("tiny").eval()
    with pytest.raises(ValueError, match="expected images"):
        token_statistics(tokenizer, torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="stride"):
        token_statistics(tokenizer, torch.rand(1, 3, 30, 32))
