"""The exact inference shortcuts of the lite TAEF2 halves (tokenizer/taef2_fused.py): equal to the layers they
replace (border pixels included), used only where they apply, and not in training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from varestorer.tokenizer.taef2 import TAEF2_PRESETS, TAEF2Tokenizer
from varestorer.tokenizer.taef2_fused import (
    decoder_tail_fusable,
    encoder_head_fusable,
    fused_decoder_tail,
    fused_encoder_head,
)


def _conv(c_in: int, c_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)
    with torch.no_grad():  # biases as large as the weights, so a border term left out shows
        if conv.bias is not None:
            conv.bias.normal_()
    return conv


@pytest.mark.parametrize(("h", "w"), [(1, 1), (1, 3), (5, 7), (8, 8)])
@pytest.mark.parametrize("first_bias", [False, True])
def test_the_decoder_tail_equals_upsample_and_two_convs(h: int, w: int, first_bias: bool) -> None:
    torch.manual_seed(0)
    up, first, second = nn.Upsample(scale_factor=2, mode="nearest"), _conv(6, 6, bias=first_bias), _conv(6, 3)
    f = torch.randn(2, 6, h, w)
    with torch.no_grad():
        expected = second(first(up(f)))
        got = fused_decoder_tail(f, first, second)
    assert got.shape == expected.shape == (2, 3, 2 * h, 2 * w)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("h", "w"), [(2, 2), (2, 6), (8, 4), (16, 16)])
def test_the_encoder_head_equals_two_convs(h: int, w: int) -> None:
    torch.manual_seed(1)
    first, second = _conv(3, 6), _conv(6, 6, stride=2, bias=False)
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        expected = second(first(x))
        got = fused_encoder_head(x, first, second)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_encoder_head_refuses_an_odd_size() -> None:
    with pytest.raises(ValueError, match="even height and width"):
        fused_encoder_head(torch.rand(1, 3, 5, 4), _conv(3, 6), _conv(6, 6, stride=2))


def test_only_the_lite_halves_are_fusable() -> None:
    full, lite = TAEF2Tokenizer(TAEF2_PRESETS["taef2-tiny"]), TAEF2Tokenizer(TAEF2_PRESETS["taef2-tiny-lite"])
    assert encoder_head_fusable(lite.encoder.net) and decoder_tail_fusable(lite.decoder.net)
    assert not encoder_head_fusable(full.encoder.net) and not decoder_tail_fusable(full.decoder.net)


@pytest.mark.parametrize("size", [32, 40])
def test_the_lite_tokenizer_infers_as_it_trains(size: int) -> None:
    """No gradient takes the shortcuts, a gradient the layers: the same images and latents either way."""
    torch.manual_seed(2)
    lite = TAEF2Tokenizer(TAEF2_PRESETS["taef2-tiny-lite"]).eval()
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        f_fast = lite.encoder(x)
        y_fast = lite.decoder(f_fast)
    f_layers = lite.encoder(x)
    y_layers = lite.decoder(f_fast)
    assert f_layers.requires_grad and y_layers.requires_grad  # the plain path ran
    torch.testing.assert_close(f_fast, f_layers.detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y_fast, y_layers.detach(), atol=1e-5, rtol=1e-4)


def test_the_shortcuts_run_under_bf16_autocast() -> None:
    """The teacher's training encodes its crops under CPU bf16 autocast, where the fused kernels are bf16."""
    torch.manual_seed(2)
    lite = TAEF2Tokenizer(TAEF2_PRESETS["taef2-tiny-lite"]).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        f, y = lite.encoder(x), lite.decoder(lite.encoder(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f_bf16 = lite.encoder(x)
            y_bf16 = lite.decoder(f)
    assert f_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(f_bf16.float(), f, atol=0.1, rtol=0.05)
    torch.testing.assert_close(y_bf16.float(), y, atol=0.1, rtol=0.05)
