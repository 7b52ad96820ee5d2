from __future__ import annotations

import math
from dataclasses import replace as dataclass_replace

import pytest
import torch
import torch.nn.functional as F

from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import TOKENIZER_PRESETS, TokenizerConfig, tokenizer_preset
from varestorer.tokenizer.quantizer import BitwiseQuantizer, MultiScaleQuantizer
from varestorer.tokenizer.scales import schedule_for_grid, token_count

SCHEDULE = schedule_for_grid(16, 16)  # Infinity's 7-scale 256 px schedule


def smooth_latent(batch: int = 2, d: int = 16, size: int = 16, seed: int = 0) -> torch.Tensor:
    """A random latent with structure at every scale (sum of upsampled noise), like real encoder features."""
    g = torch.Generator().manual_seed(seed)
    f = torch.zeros(batch, d, size, size)
    for side in (1, 2, 4, 8, 16):
        f += F.interpolate(torch.randn(batch, d, side, side, generator=g), size=(size, size), mode="bilinear")
    return f


def test_quantizer_interface_and_bits() -> None:
    q = BitwiseQuantizer(16)
    assert isinstance(q, MultiScaleQuantizer) and q.bitwise and q.num_classes == 2 and q.token_dim == 16
    assert q.bit_values() == pytest.approx((-0.25, 0.25))
    out = q.quantize(smooth_latent(), SCHEDULE)
    assert [tuple(x.shape) for x in out.labels] == [(2, h * w, 16) for h, w in SCHEDULE]
    assert all(x.dtype == torch.int64 and set(x.unique().tolist()) <= {0, 1} for x in out.labels)
    assert out.f_hat.shape == (2, 16, 16, 16) and len(out.residual_norms) == len(SCHEDULE)
    # The first scale's bits are the signs of the mean latent (area down to 1x1).
    mean_sign = (smooth_latent().mean(dim=(2, 3)) > 0).long()
    assert torch.equal(out.labels[0][:, 0], mean_sign)


def test_labels_to_f_hat_reproduces_the_quantizer() -> None:
    q = BitwiseQuantizer(16)
    out = q.quantize(smooth_latent(), SCHEDULE)
    f_hat = q.labels_to_f_hat(out.labels, SCHEDULE, (16, 16))
    torch.testing.assert_close(f_hat, out.f_hat, rtol=0, atol=1e-6)
    codes = q.labels_to_codes(out.labels[1], SCHEDULE[1])
    assert codes.shape == (2, 16, 2, 2) and torch.allclose(codes.abs(), torch.full_like(codes, 0.25))
    assert torch.allclose(codes.pow(2).sum(1), torch.ones(2, 2, 2))  # unit-norm tokens
    partial = q.labels_to_f_hat(out.labels[:3], SCHEDULE, (16, 16))
    manual = torch.zeros(2, 16, 16, 16)
    for labels, hw in zip(out.labels[:3], SCHEDULE):
        manual = q.add_scale(manual, q.labels_to_codes(labels, hw))
    torch.testing.assert_close(partial, manual)


def test_residual_norm_falls_scale_by_scale() -> None:
    out = BitwiseQuantizer(16).quantize(smooth_latent(d=16) * 0.3, SCHEDULE)
    norms = out.residual_norms
    assert all(b < a for a, b in zip(norms, norms[1:])), norms
    start = (smooth_latent(d=16) * 0.3).norm(dim=1).mean().item()
    assert norms[-1] < 0.5 * start


def test_teacher_forcing_inputs_shape_and_values() -> None:
    q = BitwiseQuantizer(16)
    out = q.quantize(smooth_latent(), SCHEDULE)
    assert out.inputs.shape == (2, token_count(SCHEDULE) - 1, 16)
    f_hat = torch.zeros(2, 16, 16, 16)
    start = 0
    for k in range(len(SCHEDULE) - 1):
        f_hat = q.add_scale(f_hat, q.labels_to_codes(out.labels[k], SCHEDULE[k]))
        h, w = SCHEDULE[k + 1]
        expected = q.next_input(f_hat, (h, w))
        assert expected.shape == (2, h * w, 16)
        torch.testing.assert_close(out.inputs[:, start : start + h * w], expected, rtol=0, atol=1e-6)
        start += h * w
    torch.testing.assert_close(q.teacher_forcing_inputs(out.labels, SCHEDULE, (16, 16)), out.inputs)
    # The first next input is bilinear (Infinity's trilinear for one frame) of the 1x1 code: constant.
    assert torch.allclose(out.inputs[:, :4], out.inputs[:, :1].expand(-1, 4, -1))


def test_area_inputs_option_and_single_scale() -> None:
    q = BitwiseQuantizer(8, input_interpolation="area")
    f = torch.randn(1, 8, 4, 4)
    out = q.quantize(f, ((1, 1), (4, 4)))
    torch.testing.assert_close(out.inputs, q.next_input(q.labels_to_f_hat(out.labels[:1], ((1, 1),), (4, 4)), (4, 4)))
    assert q.quantize(f, ((4, 4),)).inputs.shape == (1, 0, 8)


def test_straight_through_gradient_reaches_f() -> None:
    f = smooth_latent(batch=1).requires_grad_()
    out = BitwiseQuantizer(16).quantize(f, SCHEDULE)
    (out.f_hat.sum() + out.inputs.pow(2).sum()).backward()
    assert f.grad is not None and f.grad.abs().sum() > 0


def test_self_correction_flips_are_seeded_and_change_later_labels() -> None:
    q = BitwiseQuantizer(16)
    f = smooth_latent()
    clean = q.quantize(f, SCHEDULE)

    def flipped(seed: int):
        return q.quantize(f, SCHEDULE, flip_probability=0.3, generator=torch.Generator().manual_seed(seed))

    a, b, c = flipped(1), flipped(1), flipped(2)
    assert all(torch.equal(x, y) for x, y in zip(a.labels, b.labels)) and torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.labels[0], clean.labels[0])  # labels are recorded before the flip
    assert any(not torch.equal(x, y) for x, y in zip(a.labels[1:], clean.labels[1:]))
    assert any(not torch.equal(x, y) for x, y in zip(a.labels, c.labels))
    # Fixed strength: labels_to_f_hat of the labels no longer equals the corrupted f_hat.
    fixed = q.quantize(f, SCHEDULE, flip_probability=0.2, random_strength=False, generator=torch.Generator())
    assert not torch.allclose(q.labels_to_f_hat(fixed.labels, SCHEDULE, (16, 16)), fixed.f_hat)
    only_first = q.quantize(f, SCHEDULE, flip_probability=0.5, random_strength=False, flip_scales=0)
    assert all(torch.equal(x, y) for x, y in zip(only_first.labels, clean.labels))


@pytest.mark.parametrize("kind", ["bitwise", "codebook"])
def test_quantizer_rejects_bad_input(kind: str) -> None:
    from varestorer.tokenizer.codebook import CodebookQuantizer

    q = BitwiseQuantizer(8) if kind == "bitwise" else CodebookQuantizer(8, codebook_size=4, num_phi=1)
    with pytest.raises(ValueError, match="latent"):
        q.quantize(torch.randn(1, 4, 4, 4), ((1, 1),))
    with pytest.raises(ValueError, match="latent"):
        q.quantize(torch.randn(8, 4, 4), ((1, 1),))
    with pytest.raises(ValueError, match="does not fit"):
        q.quantize(torch.randn(1, 8, 4, 4), ((1, 1), (8, 8)))
    with pytest.raises(ValueError, match="empty"):
        q.quantize(torch.randn(1, 8, 4, 4), ())
    with pytest.raises(ValueError, match="flip_probability"):
        q.quantize(torch.randn(1, 8, 4, 4), ((1, 1),), flip_probability=2.0)
    with pytest.raises(ValueError, match="do not fit"):
        q.labels_to_codes(torch.zeros(1, 3, 8, dtype=torch.long), (2, 2))


def test_presets_are_valid_and_stride_16() -> None:
    assert set(TOKENIZER_PRESETS) >= {"tiny", "small", "infinity-d16", "infinity-d24", "infinity-d32", "infinity-d64"}
    assert all(cfg.stride == 16 for cfg in TOKENIZER_PRESETS.values())
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        tokenizer_preset("huge")
    with pytest.raises(ValueError):
        TokenizerConfig(channel_multipliers=())


def test_tiny_tokenizer_round_trip_shapes() -> None:
    model = MultiScaleTokenizer.from_preset("tiny").eval()
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    f = model.encode(x)
    assert f.shape == (2, 8, 4, 3)
    tokens = model.tokenize(x)
    schedule = model.default_schedule(64, 48)
    assert schedule[-1] == (4, 3) and len(tokens.labels) == len(schedule)
    image = model.decode(tokens.f_hat)
    assert image.shape == x.shape and image.min() >= -1 and image.max() <= 1
    torch.testing.assert_close(model.labels_to_image(tokens.labels, schedule), image)
    recon, _ = model(x)
    assert recon.shape == x.shape
    g = torch.Generator().manual_seed(0)
    kept = model.tokenize(x, flip_probability=0.5, generator=g, flip_scales=1, random_strength=False)
    assert torch.equal(kept.labels[0], tokens.labels[0]) and not torch.equal(kept.f_hat, tokens.f_hat)
    with pytest.raises(ValueError, match="multiple of the stride"):
        model.encode(torch.zeros(1, 3, 40, 48))
    with pytest.raises(ValueError, match="expected images"):
        model.encode(torch.zeros(3, 64, 64))


def test_save_load_gives_identical_outputs(tmp_path) -> None:
    model = MultiScaleTokenizer.from_preset("tiny").eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    model.save_pretrained(tmp_path / "tok")
    loaded = MultiScaleTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.config == model.config
    with torch.no_grad():
        a, b = model.tokenize(x), loaded.tokenize(x)
        assert all(torch.equal(p, q) for p, q in zip(a.labels, b.labels))
        assert torch.equal(model.decode(a.f_hat), loaded.decode(b.f_hat))
    with pytest.raises(FileExistsError):
        model.save_pretrained(tmp_path / "tok")


def test_corrupt_and_mismatched_checkpoints(tmp_path) -> None:
    model = MultiScaleTokenizer.from_preset("tiny")
    model.save_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        MultiScaleTokenizer.from_pretrained(tmp_path / "tok")
    other = MultiScaleTokenizer(
        TokenizerConfig(token_dim=4, base_channels=8, channel_multipliers=(1, 2, 2, 2, 2), num_res_blocks=1)
    )
    other.save_pretrained(tmp_path / "other")
    config = (tmp_path / "other" / "config.json").read_text().replace('"token_dim": 4', '"token_dim": 8')
    (tmp_path / "other" / "config.json").write_text(config)
    with pytest.raises(ValueError, match="wrong shape.*conv_out"):
        MultiScaleTokenizer.from_pretrained(tmp_path / "other")


def test_bits_per_token_value_is_one_over_sqrt_d() -> None:
    q = BitwiseQuantizer(32)
    lo, hi = q.bit_values()
    assert hi == pytest.approx(1 / math.sqrt(32)) and lo == -hi


def test_codebook_quantizer_fits_the_same_interface(tmp_path) -> None:
    from varestorer.tokenizer.codebook import CodebookQuantizer

    q = CodebookQuantizer(16, codebook_size=64, num_phi=4)
    assert isinstance(q, MultiScaleQuantizer) and not q.bitwise and q.num_classes == 64
    assert q.code_table().shape == (64, 16)
    assert [q.phi_index(k, 10) for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]  # VAR's 10-scale mapping
    with torch.no_grad():
        q.embedding.weight.copy_(torch.randn(64, 16))
    f = smooth_latent().requires_grad_()
    out = q.quantize(f, SCHEDULE)
    assert [tuple(x.shape) for x in out.labels] == [(2, h * w) for h, w in SCHEDULE]
    assert out.inputs.shape == (2, token_count(SCHEDULE) - 1, 16)
    torch.testing.assert_close(q.labels_to_f_hat(out.labels, SCHEDULE, (16, 16)), out.f_hat.detach())
    torch.testing.assert_close(q.teacher_forcing_inputs(out.labels, SCHEDULE, (16, 16)), out.inputs)
    (out.f_hat.sum() + out.codebook_loss + out.commitment_loss).backward()
    assert f.grad is not None and f.grad.abs().sum() > 0 and q.embedding.weight.grad.abs().sum() > 0
    assert q.phis[0].weight.grad is not None
    g = torch.Generator().manual_seed(3)
    flipped = q.quantize(f.detach(), SCHEDULE, flip_probability=0.5, generator=g)
    again = q.quantize(f.detach(), SCHEDULE, flip_probability=0.5, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(flipped.labels, again.labels))
    assert not torch.equal(flipped.f_hat, out.f_hat.detach())
    config = TokenizerConfig(token_dim=8, base_channels=8, channel_multipliers=(1, 2, 2, 2, 2), num_res_blocks=1)
    model = MultiScaleTokenizer(dataclass_replace(config, quantizer="codebook", codebook_size=32)).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    tokens = model.tokenize(x)
    assert model.labels_to_image(tokens.labels, model.default_schedule(64, 64)).shape == (1, 3, 64, 64)
    model.save_pretrained(tmp_path / "vq")
    loaded = MultiScaleTokenizer.from_pretrained(tmp_path / "vq")
    assert all(torch.equal(a, b) for a, b in zip(loaded.tokenize(x).labels, tokens.labels))


def test_bitwise_losses_and_code_table() -> None:
    q = BitwiseQuantizer(16)
    out = q.quantize(smooth_latent(), SCHEDULE)
    expected = (smooth_latent() - out.f_hat).pow(2).mean()
    torch.testing.assert_close(out.commitment_loss, expected)
    assert out.codebook_loss.item() == 0
    assert q.code_table().tolist() == pytest.approx([-0.25, 0.25])


def test_the_tokenizer_interface_is_abstract_until_a_family_gives_stride_and_token_dim() -> None:
    from varestorer.tokenizer.base import MultiScaleTokenizerBase

    with pytest.raises(TypeError, match="abstract"):
        MultiScaleTokenizerBase()  # type: ignore[abstract]
