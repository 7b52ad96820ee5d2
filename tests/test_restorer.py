"""Restorer API: input kinds and modes round-trip, exact sizes, tiling policy, errors, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.foreign.peers import build_peer
from varestorer.inference.color import adain_color_fix, apply_color_fix, wavelet_color_fix, wavelet_low_frequency
from varestorer.inference.restorer import OneStepSR, Restorer
from varestorer.models.precleaner import PreCleaner


@pytest.fixture
def model() -> SRVGGNetCompact:
    return SRVGGNetCompact(SRVGGConfig(num_feat=8, num_conv=2, upscale=4)).eval()


@pytest.fixture
def restorer(model) -> Restorer:
    return Restorer(model, device="cpu")


class FixedSizeSR(nn.Module):
    """A model that only accepts 16x16 inputs (like a student with a fixed working size)."""

    scale, input_size, size_multiple = 2, 16, 8

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        assert lq.shape[-2:] == (16, 16), lq.shape
        self.seen.append(tuple(lq.shape))
        return F.interpolate(lq * self.gain, scale_factor=2, mode="bilinear", align_corners=False)


def test_protocol_and_native_output_equals_model(model, restorer) -> None:
    assert isinstance(model, OneStepSR) and isinstance(FixedSizeSR(), OneStepSR)
    x = torch.rand(2, 3, 9, 14)
    out = Restorer(model, device="cpu", edge_context=0)(x)  # no mirrored border: exactly the model
    assert out.shape == (2, 3, 36, 56) and out.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(out, model(x).clamp(0, 1), atol=1e-6)
    assert torch.allclose(restorer(x)[1:], restorer(x[1:]), atol=1e-6)  # batch items are independent


@pytest.mark.parametrize("size", [(7, 5), (13, 30), (1, 1), (2, 9)])
@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5, 2.0, 3.3, 4.0, 5.5])
def test_exact_output_size_for_any_scale(restorer, size, scale) -> None:
    height, width = size
    if round(scale * height) < 1 or round(scale * width) < 1:
        with pytest.raises(ValueError, match="shrinks"):
            restorer(np.zeros((height, width, 3), np.uint8), scale=scale)
        return
    out = restorer(np.zeros((height, width, 3), np.uint8), scale=scale)
    assert out.shape == (round(scale * height), round(scale * width), 3) and out.dtype == np.uint8


def test_numpy_modes_round_trip(restorer, tiny_image) -> None:
    rgb = tiny_image(12, 10)
    assert restorer(rgb).shape == (48, 40, 3)
    gray = rgb[..., 0]
    out_gray = restorer(gray)
    assert out_gray.shape == (48, 40) and out_gray.dtype == np.uint8
    # 16 bits are kept: the uint16 result matches the float path to 16-bit precision.
    deep = (rgb.astype(np.uint16) * 257 + np.arange(10, dtype=np.uint16)[None, :, None]).astype(np.uint16)
    out16 = restorer(deep)
    reference = restorer(deep.astype(np.float32) / 65535)
    assert out16.dtype == np.uint16 and np.abs(out16 / 65535 - reference).max() <= 1 / 65535 + 1e-6
    assert len(np.unique(out16 % 257)) > 1  # not an 8-bit image in disguise
    # RGBA: alpha is resized separately (bicubic), not by the model.
    alpha = np.linspace(0, 255, 10, dtype=np.float32)[None, :].repeat(12, 0).astype(np.uint8)
    out_rgba = restorer(np.dstack([rgb, alpha]))
    expected = F.interpolate(
        torch.from_numpy(alpha).float()[None, None] / 255, size=(48, 40), mode="bicubic", antialias=True
    )
    expected = (expected.clamp(0, 1)[0, 0].numpy() * 255 + 0.5).astype(np.uint8)
    assert out_rgba.shape == (48, 40, 4) and np.abs(out_rgba[..., 3].astype(int) - expected).max() <= 1
    assert np.array_equal(out_rgba[..., :3], restorer(rgb))


@pytest.mark.parametrize(
    ("mode", "out_mode"),
    [("RGB", "RGB"), ("L", "L"), ("RGBA", "RGBA"), ("P", "RGB"), ("CMYK", "RGB"), ("I;16", "I;16")],
)
def test_pil_modes(restorer, tiny_image, mode, out_mode) -> None:
    base = Image.fromarray(tiny_image(8, 6))
    image = (
        Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 250) if mode == "I;16" else base.convert(mode)
    )
    out = restorer(image, scale=2)
    assert out.mode == out_mode and out.size == (12, 16)


def test_input_errors(restorer) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        restorer(torch.full((1, 3, 4, 4), 2.0))
    with pytest.raises(ValueError, match="tensor"):
        restorer(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="uint8"):
        restorer(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        restorer(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="positive"):
        restorer(np.zeros((4, 4, 3), np.uint8), scale=float("nan"))
    with pytest.raises(ValueError, match="no text prompt"):
        restorer(np.zeros((4, 4, 3), np.uint8), prompt="a cat")
    with pytest.raises(TypeError, match="PIL image"):
        restorer([[0]])
    with pytest.raises(TypeError, match="OneStepSR"):
        Restorer(nn.Conv2d(3, 3, 1), device="cpu")
    with pytest.raises(ValueError, match="color fix"):
        Restorer(SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=0)), device="cpu", color_fix="sepia")  # type: ignore[arg-type]


def test_fixed_size_model_is_tiled_and_padded() -> None:
    fixed = FixedSizeSR()
    restorer = Restorer(fixed, device="cpu", batch_size=4)
    x = torch.rand(1, 3, 40, 23)
    out = restorer(x)
    assert out.shape == (1, 3, 80, 46)
    assert all(shape[-2:] == (16, 16) for shape in fixed.seen) and sum(s[0] for s in fixed.seen) > 4
    # Bilinear x2 is local, so the blended tiles reproduce the untiled result away from padding.
    reference = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    error = (out - reference)[..., 2:-2, 2:-2].abs()
    assert error.max() < 1e-2 and error.mean() < 1e-3
    assert restorer(torch.rand(1, 3, 3, 5)).shape == (1, 3, 6, 10)  # tiny input padded to 16


class PromptSR(nn.Module):
    """A model that reads text: the prompt's length scales the output (so the effect is checkable)."""

    scale, input_size, size_multiple = 1, None, 1

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return torch.tensor([len(p) / 10.0 for p in prompts])

    def forward(self, lq: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        assert text is None or text.shape == (lq.shape[0],)
        return lq * (1.0 if text is None else text[:, None, None, None])


def test_prompt_reaches_models_that_read_text() -> None:
    restorer = Restorer(PromptSR(), device="cpu", batch_size=2, tile=4, tile_overlap=1)
    x = torch.full((1, 3, 9, 9), 0.5)
    assert torch.allclose(restorer(x), x)
    assert torch.allclose(restorer(x, prompt="abcde"), x * 0.5)


def test_tile_override_matches_untiled(model, tiny_image) -> None:
    image = tiny_image(40, 33)
    whole = Restorer(model, device="cpu")(image)
    tiled = Restorer(model, device="cpu", tile=16, tile_overlap=8, batch_size=3)(image)
    assert np.abs(whole.astype(int) - tiled.astype(int)).mean() < 0.5


def test_color_fixes() -> None:
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 16, 16) * 0.5 + 0.25
    sr = F.interpolate(lq, scale_factor=2, mode="bicubic") * 0.5 + 0.3  # a colour-shifted restoration
    fixed = adain_color_fix(sr, lq)
    assert torch.allclose(fixed.mean(dim=(-2, -1)), lq.mean(dim=(-2, -1)), atol=1e-5)
    assert torch.allclose(fixed.std(dim=(-2, -1)), lq.std(dim=(-2, -1)), atol=1e-3)
    wave = wavelet_color_fix(sr, lq)
    lq_up = F.interpolate(lq, size=(32, 32), mode="bicubic")
    error_before = (wavelet_low_frequency(sr) - wavelet_low_frequency(lq_up)).abs().mean()
    error_after = (wavelet_low_frequency(wave) - wavelet_low_frequency(lq_up)).abs().mean()
    assert error_after < 0.2 * error_before


def test_fewer_wavelet_levels_take_more_of_the_colour_from_the_lq() -> None:
    # A restoration whose colour drifts over ~40 output px (the default model's desaturated saturated green,
    # docs/default_model.md "v3M"): 5 levels (StableSR's) keep part of that drift as "detail", 4 take it from the
    # LQ; the finest detail (a 2 px checker) survives both.
    size = 128
    lq = torch.zeros(1, 3, size // 4, size // 4)
    lq[:, 1] = 0.8  # a flat saturated green
    x = torch.arange(size, dtype=torch.float32)
    drift = 0.15 * torch.sin(2 * torch.pi * x / 40)  # the model's slow colour wobble
    checker = 0.05 * ((x[:, None] + x[None, :]) % 2 * 2 - 1)  # fine detail
    sr = F.interpolate(lq, size=(size, size), mode="bicubic") + drift[None, None, None, :] + checker
    errors = {}
    for levels in (5, 4):
        fixed = apply_color_fix(sr, lq, "wavelet", levels=levels)
        inner = fixed[..., 16:-16, 16:-16]
        column_means = inner.mean(dim=-2)  # averages the checker out, leaves the drift
        errors[levels] = (column_means - torch.tensor([0.0, 0.8, 0.0])[:, None]).abs().max().item()
        detail = (inner[..., 0::2, 0::2] - inner[..., 0::2, 1::2]).mean().item()
        assert abs(detail + 0.1) < 0.02  # the checker's -0.05 / +0.05 kept
    assert errors[4] < 0.6 * errors[5]  # 0.064 against 0.142
    with pytest.raises(ValueError, match="at least 1 level"):
        apply_color_fix(sr, lq, "wavelet", levels=0)


def test_color_fix_and_precleaner_in_restorer(model, tiny_image) -> None:
    image = tiny_image(16, 12)
    for fix in ("adain", "wavelet"):
        out = Restorer(model, device="cpu", color_fix=fix)(image)
        assert out.shape == (64, 48, 3)
    cleaned = Restorer(model, device="cpu", precleaner=PreCleaner(build_peer("precleaner-1x")))(image)
    assert cleaned.shape == (64, 48, 3) and not np.array_equal(cleaned, Restorer(model, device="cpu")(image))


def test_from_pretrained_dispatch(model, tmp_path) -> None:
    model.save_pretrained(tmp_path / "ckpt")
    loaded = Restorer.from_pretrained(tmp_path / "ckpt", device="cpu", dtype="float32")
    x = torch.rand(1, 3, 6, 6)
    assert torch.allclose(loaded(x), Restorer(model, device="cpu")(x))
    torch.save(model.state_dict(), tmp_path / "w.pth")
    assert Restorer.from_pretrained(tmp_path / "w.pth", device="cpu").scale == 4
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Restorer.from_pretrained(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "Mystery", "config": {}}')
    with pytest.raises(ValueError, match="restorable types"):
        Restorer.from_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="dtype"):
        Restorer(model, device="cpu", dtype="int8")


def test_student_checkpoint_restores_at_any_size(tmp_path) -> None:
    try:
        from varestorer.models.student import Student
        from varestorer.models.student_config import StudentConfig
    except ValueError as error:  # main at ab9e97f: the "small" student preset fails at import
        pytest.skip(f"student presets do not build on this checkout: {error}")
    from varestorer.tokenizer.config import tokenizer_preset
    from varestorer.transformer.config import transformer_preset

    config = StudentConfig(
        tokenizer=tokenizer_preset("tiny"), transformer=transformer_preset("tiny"), image_size=64, scale=4, lora_rank=2
    )
    student = Student(config).eval()  # 16 px LQ working size, x4
    student.merged().save_pretrained(tmp_path / "student")
    restorer = Restorer.from_pretrained(tmp_path / "student", device="cpu", batch_size=4)
    assert (restorer.scale, restorer.input_size) == (4, 16)
    out = restorer(np.zeros((20, 37, 3), np.uint8) + 128, scale=2.5)
    assert out.shape == (50, 92, 3) and out.dtype == np.uint8
