"""Text conditioning: a tiny randomly initialised T5 read from a local folder drives the transformer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from varestorer.transformer.config import TRANSFORMER_PRESETS, TextEncoderConfig
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition, TextEncoder, load_text_encoder

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from conftest import write_tiny_t5 as _write_tiny_t5  # noqa: E402


def test_tiny_t5_from_a_local_folder_encodes_captions(tmp_path) -> None:
    _write_tiny_t5(tmp_path / "t5")
    encoder = load_text_encoder(TextEncoderConfig(kind="transformers", path=str(tmp_path / "t5"), max_length=6))
    assert isinstance(encoder, TextEncoder) and encoder.dim == 32
    text = encoder(["a photo of a cat on grass", "dog"])
    assert text.tokens.shape == (2, 6, 32)  # truncated to max_length
    assert text.lengths.tolist() == [6, 2]  # "dog </s>"
    assert torch.all(text.tokens[1, 2:] == 0)  # padding is zeroed
    alone = encoder(["dog"])
    torch.testing.assert_close(alone.tokens[0, :2], text.tokens[1, :2], atol=1e-5, rtol=1e-5)
    # The encoded captions condition the transformer (text_dim = the encoder's width).
    config = dataclasses.replace(TRANSFORMER_PRESETS["tiny"], text_dim=32, rope_extent="last")
    model = NextScaleTransformer(config).eval()
    schedule = ((1, 1), (2, 2))
    with torch.no_grad():
        logits = model(torch.randn(2, 4, 8), schedule, text)
    assert logits.shape == (2, 5, 8, 2) and torch.isfinite(logits).all()


def test_no_encoder_and_bad_inputs() -> None:
    assert load_text_encoder(TextEncoderConfig()) is None
    with pytest.raises(ValueError, match="needs a path"):
        load_text_encoder(TextEncoderConfig(kind="transformers"))
    with pytest.raises(FileNotFoundError):
        load_text_encoder(TextEncoderConfig(kind="transformers", path="/nonexistent/t5"))
    with pytest.raises(ValueError, match="lengths must be in"):
        TextCondition(torch.zeros(1, 3, 4), torch.tensor([0]))


def test_text_condition_helpers() -> None:
    a = TextCondition(torch.ones(2, 3, 4), torch.tensor([3, 1]))
    b = TextCondition(torch.ones(1, 5, 4), torch.tensor([5]))
    both = TextCondition.cat([a, b])
    assert both.tokens.shape == (3, 5, 4) and both.lengths.tolist() == [3, 1, 5]
    assert both.mask.sum().item() == 9
    torch.testing.assert_close(a.pooled, torch.ones(2, 4))
    assert a.repeat(2).lengths.tolist() == [3, 3, 1, 1]
