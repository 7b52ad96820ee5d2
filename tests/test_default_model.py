"""The embedded default model: it loads, restores deterministically, and its output does not drift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from varestorer.families import EMBEDDED_MODELS, WEIGHTS_DIR
from varestorer.inference.restorer import Restorer

# Centre 3x3 of channel 0 of the restored 24x20 test image below (float32 CPU, one thread as conftest sets:
# the thread count changes float sums enough to flip a few near-zero bits); guards against silent
# changes to the weights, the model code or the restore path. Regenerate only for an intended change.
# Re-recorded when the restorer began mirroring 4 px of context around the image (issue 20: no dark frame),
# and when the shipped weights moved from fp16 to int8 storage (outputs moved by about 2 levels).
# Re-recorded for default model v2 (issue 16: x4v3 pre-cleaner + TAEF2 tokenizer, fp16 weights), and for
# v2L (v2 on the lite TAEF2 halves; both 24.8 dB from bicubic on this image, locally different), and for v2Q
# (v2L with TAEF2 Blocks left out; 22.2 dB from bicubic), and for v3P (issue 32: a transformer that changes
# bits, the default tokenizer's decoder; 15.1 dB from bicubic without a colour fix, 22.2 dB with its AdaIN default),
# and for v3T (v3P's transformer trained through the image; 18.0 dB without a colour fix, 23.2 dB with AdaIN),
# and for v3M (v3T without the fidelity residual, on camera-like pairs; 21.6 dB without a colour fix, 24.3 dB with
# its wavelet default), and for v3R (v3M's weights, the transformer over the first four scales: the finer ones keep the
# LQ's bits; 18.5 dB without a colour fix, 27.4 dB with its wavelet default).
GOLDEN = [
    [0.53013, 0.56444, 0.59346],
    [0.54979, 0.57352, 0.60058],
    [0.55764, 0.58003, 0.60741],
]


def _lq() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:20]
    base = np.stack([np.sin(xx / 3 + c) * np.cos(yy / 4 - c) for c in range(3)], axis=-1) * 0.35 + 0.5
    return np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1).astype(np.float32)


def test_default_model_restores_deterministically_and_matches_the_golden_slice() -> None:
    restorer = Restorer.from_pretrained(device="cpu")
    lq = torch.from_numpy(_lq()).permute(2, 0, 1)[None]
    first = restorer(lq, scale=4, color_fix="none")  # the slice predates the adain default (issue 31)
    second = restorer(lq, scale=4, color_fix="none")
    assert first.shape == (1, 3, 96, 80) and torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1
    centre = first[0, 0, 47:50, 39:42]
    torch.testing.assert_close(centre, torch.tensor(GOLDEN), atol=2e-3, rtol=0)


def test_default_model_is_embedded_and_small() -> None:
    assert "default" in EMBEDDED_MODELS
    restorer = Restorer.from_pretrained(device="cpu")
    assert restorer.scale == 4
    assert restorer._tiling(None, None) == (64, 6)  # its config's overlap (docs/default_model.md: fewer tiles)
    folder = WEIGHTS_DIR / EMBEDDED_MODELS["default"]
    weights = sorted(folder.glob("*.safetensors"))
    assert weights and all(f.stat().st_size < 16_000_000 for f in weights)  # each file under 16 MB
    embedded = [f for f in folder.parent.rglob("*") if f.is_file()]  # every embedded model together
    assert sum(f.stat().st_size for f in embedded) <= 25_000_000  # the package's budget


def test_the_colour_fix_default_is_what_the_help_says_and_keeps_flat_colours(capsys) -> None:
    from varestorer.cli.main import main

    restorer = Restorer.from_pretrained(device="cpu")
    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    levels = f", {restorer.color_fix_levels} levels" if restorer.color_fix == "wavelet" else ""
    assert f"{restorer.color_fix}{levels} for the embedded model" in help_text, help_text
    # Without a colour fix, flat saturated colours moved by up to 55 levels (docs/default_model.md, issue 31).
    blue = np.empty((12, 12, 3), np.uint8)
    blue[:] = (20, 20, 230)
    mean = restorer(blue).reshape(-1, 3).mean(0)
    assert np.abs(mean - (20, 20, 230)).max() < 2, mean
    # Issue 32's look: flat patches within 3 levels (docs/default_model.md, "v3M"). Green beside blue, 32 LQ px
    # each, as on the contact sheet's test card: the shipped 4 wavelet levels keep them within 1.2 / 0.9 levels,
    # StableSR's 5 gave 2.9 / 3.2 here (5.8 on the card's green); the bound of 2 tells the two apart.
    patches = np.empty((32, 64, 3), np.uint8)
    patches[:, :32], patches[:, 32:] = (20, 20, 230), (20, 200, 20)
    out = restorer(patches).astype(float)
    for column, colour in ((0, (20, 20, 230)), (1, (20, 200, 20))):
        inner = out[16:112, column * 128 + 16 : column * 128 + 112].reshape(-1, 3).mean(0)
        assert np.abs(inner - colour).max() < 2, (colour, inner)


def test_default_model_ships_the_licences_of_its_pretrained_parts() -> None:
    folder = WEIGHTS_DIR / EMBEDDED_MODELS["default"]
    assert "BSD" in (folder / "LICENSE-Real-ESRGAN.txt").read_text(encoding="utf-8")  # realesr-general-x4v3
    assert "MIT" in (folder / "LICENSE-taesd.txt").read_text(encoding="utf-8")  # TAEF2 encoder/decoder
    restorer = Restorer.from_pretrained(device="cpu")
    assert restorer.model.precleaner is not None and type(restorer.model.encoder).__name__ == "TAEF2Encoder"
    keys = restorer.model.state_dict()
    assert "encoder.net.2.weight" in keys and "encoder.net.1.conv.0.weight" not in keys  # v2L: the lite halves
    assert "decoder.net.18.conv.0.weight" not in keys  # (docs/tokenizer.md: no blocks at full image resolution)
    config = restorer.model.config
    assert config.encoder_skip_blocks == (3, 4, 5) and config.decoder_skip_blocks == (14, 15)  # v2Q: CPU speed
    assert not any(k.startswith(("encoder.net.3.", "decoder.net.14.")) for k in keys)


def test_the_previous_default_v2l_is_embedded_as_int8_beside_it() -> None:
    """``--model v2l``: v2L (the lite halves whole, no Blocks left out), int8 matrices, licences beside it."""
    folder = WEIGHTS_DIR / EMBEDDED_MODELS["v2l"]
    assert "BSD" in (folder / "LICENSE-Real-ESRGAN.txt").read_text(encoding="utf-8")
    assert "MIT" in (folder / "LICENSE-taesd.txt").read_text(encoding="utf-8")
    restorer = Restorer.from_pretrained("v2l", device="cpu")
    config = restorer.model.config
    assert config.encoder_skip_blocks == () and config.decoder_skip_blocks == () and config.tile_overlap == 6
    keys = restorer.model.state_dict()
    assert "encoder.net.3.conv.0.weight" in keys and "decoder.net.14.conv.0.weight" in keys
    lq = torch.from_numpy(_lq()).permute(2, 0, 1)[None]
    out = restorer(lq, scale=4)
    assert out.shape == (1, 3, 96, 80)
    centre = out[0, 0, 47:50, 39:42]
    assert 0.005 < (centre - torch.tensor(GOLDEN)).abs().max() < 0.2  # near the default's output, not equal
