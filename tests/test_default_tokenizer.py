"""The embedded ``default-tokenizer``: fine-tuned TAEF2 lite, MIT notice, fp16, round trips through the quantiser."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from varestorer.families import EMBEDDED_MODELS, WEIGHTS_DIR
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.tokenizer.taef2 import TAEF2Tokenizer

FOLDER = WEIGHTS_DIR / EMBEDDED_MODELS["default-tokenizer"]


def _image(size: int = 64) -> torch.Tensor:
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([np.sin(xx / 5 + c) * np.cos(yy / 7 - c) for c in range(3)], axis=-1) * 0.35 + 0.5
    return torch.from_numpy(base.astype(np.float32)).permute(2, 0, 1)[None] * 2 - 1


def test_default_tokenizer_ships_fp16_weights_with_the_mit_notice() -> None:
    notice = (FOLDER / "LICENSE-taesd.txt").read_text(encoding="utf-8")
    assert "MIT" in notice and "Permission is hereby granted" in notice
    dtypes = {tensor.dtype for tensor in load_file(str(FOLDER / "model.safetensors")).values()}
    assert dtypes == {torch.float16}
    assert sum(f.stat().st_size for f in FOLDER.iterdir()) < 6_000_000


def test_default_tokenizer_round_trips_an_image_through_the_full_quantiser() -> None:
    tokenizer = load_tokenizer(FOLDER)
    assert isinstance(tokenizer, TAEF2Tokenizer) and tokenizer.stride == 8 and tokenizer.token_dim == 32
    assert not tokenizer.config.full_resolution_blocks  # the lite variant (docs/tokenizer.md): no 256 px blocks
    assert sum(p.numel() for p in tokenizer.parameters()) == 2_455_476
    x = _image()
    with torch.no_grad():
        tokens = tokenizer.tokenize(x)
        rec = tokenizer.decode(tokens.f_hat)
        again = tokenizer.labels_to_image(tokens.labels, tokenizer.default_schedule(64, 64))
    assert rec.shape == x.shape and torch.allclose(rec, again, atol=1e-5)
    mse = float((rec - x).pow(2).mean()) / 4  # in [0, 1] units
    assert -10 * np.log10(mse) > 20.0  # measured 21.7 dB (64 px, 8x8 tokens), lite and full alike; broken ~10
