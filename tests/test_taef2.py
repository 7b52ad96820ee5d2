"""TAEF2 tokenizer family: strict loading of the released layout, quantiser, calibration, training step."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from varestorer.tokenizer.gained import GainedBitwiseQuantizer, octaves_below
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.tokenizer.quantizer import MultiScaleQuantizer
from varestorer.tokenizer.scales import schedule_for_grid
from varestorer.tokenizer.taef2 import TAEF2_FILES, TAEF2_PRESETS, TAEF2Config, TAEF2Tokenizer, load_taef2

TINY = TAEF2_PRESETS["taef2-tiny"]


def _block(prefix: str, c: int, pooled: bool) -> dict[str, tuple[int, ...]]:
    keys = {}
    for i in (0, 2, 4):
        keys[f"{prefix}.conv.{i}.weight"] = (c, c, 3, 3)
        keys[f"{prefix}.conv.{i}.bias"] = (c,)
    if pooled:
        keys |= {
            f"{prefix}.pool.0.weight": (4 * c, c, 1, 1),
            f"{prefix}.pool.1.weight": (4 * c,),
            f"{prefix}.pool.1.bias": (4 * c,),
            f"{prefix}.pool.3.weight": (c, 4 * c, 1, 1),
        }
    return keys


def released_layout(half: str, c: int = 64, d: int = 32) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released TAEF2 files, written out from their README (independent of the modules)."""
    keys: dict[str, tuple[int, ...]] = {}
    if half == "encoder":
        keys |= {"0.weight": (c, 3, 3, 3), "0.bias": (c,)}
        for i in (2, 6, 10):
            keys[f"{i}.weight"] = (c, c, 3, 3)
        for i in (1, 3, 4, 5, 7, 8, 9, 11, 12, 13):
            keys |= _block(str(i), c, pooled=i >= 11)
        keys |= {"14.weight": (d, c, 3, 3), "14.bias": (d,)}
    else:
        keys |= {"1.weight": (c, d, 3, 3), "1.bias": (c,)}
        for i in (7, 12, 17):
            keys[f"{i}.weight"] = (c, c, 3, 3)
        for i in (3, 4, 5, 8, 9, 10, 13, 14, 15, 18):
            keys |= _block(str(i), c, pooled=i <= 5)
        keys |= {"19.weight": (3, c, 3, 3), "19.bias": (3,)}
    return keys


def synthetic_files(folder: Path, c: int = 8, d: int = 8, seed: int = 0, drop: str | None = None) -> Path:
    g = torch.Generator().manual_seed(seed)
    for half, (name, _) in TAEF2_FILES.items():
        state = {k: (torch.randn(s, generator=g) * 0.05).half() for k, s in released_layout(half, c, d).items()}
        if drop is not None:
            state.pop(drop, None)
        torch.save(state, folder / name)
    return folder


def test_released_layout_has_the_published_counts_and_matches_the_modules() -> None:
    for half, params in (("encoder", 1_338_528), ("decoder", 1_338_499)):
        layout = released_layout(half)
        assert len(layout) == 79
        assert sum(torch.Size(s).numel() for s in layout.values()) == params
        net = getattr(TAEF2Tokenizer(TAEF2Config()), half).net
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == layout


def test_strict_loading_of_synthetic_files(tmp_path: Path) -> None:
    folder = synthetic_files(tmp_path)
    with pytest.raises(ValueError, match="sha256"):
        load_taef2(folder, TINY)
    model = load_taef2(folder, TINY, check_sha256=False)
    saved = torch.load(folder / "taef2_decoder.pth", weights_only=True)
    assert torch.equal(model.decoder.net.state_dict()["19.weight"], saved["19.weight"].float())
    broken = tmp_path / "broken"
    broken.mkdir()
    synthetic_files(broken, drop="12.pool.1.bias")
    with pytest.raises(ValueError, match=r"1 missing: 12\.pool\.1\.bias"):
        load_taef2(broken, TINY, check_sha256=False)
    with pytest.raises(ValueError, match="wrong shape"):
        load_taef2(folder, TAEF2Config(token_dim=4, channels=8), check_sha256=False)
    with pytest.raises(FileNotFoundError, match="encoder weights not found"):
        load_taef2(tmp_path / "nowhere", TINY)


def test_sha256_check_accepts_the_released_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = synthetic_files(tmp_path)
    digests = {h: (n, hashlib.sha256((folder / n).read_bytes()).hexdigest()) for h, (n, _) in TAEF2_FILES.items()}
    monkeypatch.setattr("varestorer.tokenizer.taef2.TAEF2_FILES", digests)
    assert isinstance(load_taef2(folder, TINY), TAEF2Tokenizer)


def test_round_trip_and_interface_on_a_tiny_image() -> None:
    torch.manual_seed(0)
    tok = TAEF2Tokenizer(TINY).eval()
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    assert tok.stride == 8 and tok.token_dim == 8 and isinstance(tok.quantizer, MultiScaleQuantizer)
    schedule = tok.default_schedule(32, 48)
    assert schedule[-1] == (4, 6)
    with torch.no_grad():
        tokens = tok.tokenize(x)
        rec = tok.decode(tokens.f_hat)
        assert rec.shape == x.shape and rec.abs().max() <= 1
        assert [tuple(b.shape) for b in tokens.labels] == [(1, h * w, 8) for h, w in schedule]
        assert torch.allclose(tok.labels_to_image(tokens.labels, schedule), rec, atol=1e-5)
    assert tok.default_schedule(256, 256) == tuple((s, s) for s in (1, 2, 4, 6, 8, 12, 16, 20, 24, 32))
    with pytest.raises(ValueError, match="multiple of the stride 8"):
        tok.encode(torch.zeros(1, 3, 30, 32))


def test_save_and_load_through_the_dispatcher(tmp_path: Path) -> None:
    tok = TAEF2Tokenizer(TINY)
    with torch.no_grad():
        tok.quantizer.gains.mul_(0.3)
        tok.encoder.latent_shift.add_(0.5)
        tok.decoder.latent_unwhiten.mul_(2.0)
    tok.save_pretrained(tmp_path / "tok")
    back = load_tokenizer(tmp_path / "tok")
    assert isinstance(back, TAEF2Tokenizer) and back.config == TINY
    assert torch.equal(back.quantizer.gains, tok.quantizer.gains)
    assert torch.equal(back.encoder.latent_shift, tok.encoder.latent_shift)
    assert torch.equal(back.decoder.latent_unwhiten, tok.decoder.latent_unwhiten)


def test_gain_depends_on_octaves_not_on_the_position_in_the_schedule() -> None:
    q = GainedBitwiseQuantizer(4, num_knots=5, knot_spacing=0.5)
    q.set_gains_from_scales([0.0, 1.0, 2.0], [1.0, 2.0, 4.0])
    assert q.gains.tolist() == pytest.approx([1.0, 1.5, 2.0, 3.0, 4.0])
    assert float(q.gain(0.25).detach()) == pytest.approx(1.25) and float(q.gain(9.0).detach()) == pytest.approx(4.0)
    assert octaves_below((16, 16), (32, 32)) == 1.0 and octaves_below((1, 1), (32, 32)) == 5.0
    codes = torch.full((1, 4, 2, 2), 0.5)  # +1/sqrt(4)
    assert torch.allclose(q.scale_codes(codes, (8, 8)), torch.full_like(codes, 4.0))  # 2 octaves -> gain 4


def test_bits_are_exact_when_the_quantiser_reencodes_its_own_f_hat() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(2, 8, 8, 8, generator=g)
    q = GainedBitwiseQuantizer(8, num_knots=9, knot_spacing=0.5)
    # One full-grid scale: sign(f_hat) is the bits by construction (fp32).
    single = ((8, 8),)
    out = q.quantize(f, single)
    assert torch.equal(q.quantize(out.f_hat, single).labels[0], out.labels[0])
    # Coarse-to-fine with steeply decreasing gains (each scale dominates all finer ones): every scale's
    # bits survive re-encoding. With gains of comparable size (real data) they need not.
    with torch.no_grad():
        q.gains.copy_(8.0 ** torch.arange(9, dtype=torch.float32))
    schedule = ((1, 1), (2, 2), (4, 4), (8, 8))
    out = q.quantize(f, schedule)
    again = q.quantize(out.f_hat, schedule)
    assert all(torch.equal(a, b) for a, b in zip(again.labels, out.labels))
    assert torch.allclose(again.f_hat, out.f_hat)


def test_calibration_whitens_the_latent_and_fits_gains() -> None:
    torch.manual_seed(0)
    tok = TAEF2Tokenizer(TINY)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    gains = tok.calibrate(x)
    assert len(gains) == len(schedule_for_grid(8, 8)) and all(v > 0 for v in gains)
    with torch.no_grad():
        f = tok.encode(x)
        flat = f.permute(0, 2, 3, 1).reshape(-1, 8)
        # PCA whitening: zero mean, identity covariance; the decoder's inverse undoes it exactly.
        assert torch.allclose(flat.mean(dim=0), torch.zeros(8), atol=1e-4)
        assert torch.allclose(flat.T @ flat / flat.shape[0], torch.eye(8), atol=1e-3)
        assert torch.allclose(tok.encoder.latent_whiten @ tok.decoder.latent_unwhiten, torch.eye(8), atol=1e-4)
        raw = tok.encoder.net((x + 1) / 2)
        assert torch.allclose(tok.decoder(f), tok.decoder.net(raw) * 2 - 1, atol=1e-4)
        # Calibrated gains quantise better than the unit initial ones.
        err = (tok.tokenize(x).f_hat - f).pow(2).mean()
        tok.quantizer.gains.fill_(1.0)
        err_unit = (tok.tokenize(x).f_hat - f).pow(2).mean()
    assert err < err_unit
    tok.calibrate(x, transform="channel")
    assert torch.equal(tok.encoder.latent_whiten, torch.diag(torch.diag(tok.encoder.latent_whiten)))
    with pytest.raises(ValueError, match="transform must be"):
        tok.calibrate(x, transform="zca")


def test_a_training_step_lowers_the_loss() -> None:
    from varestorer.training.train_tokenizer import LossConfig, TokenizerTraining

    torch.manual_seed(0)
    tok = TAEF2Tokenizer(TINY)
    batch = {"gt": torch.rand(2, 3, 32, 32)}
    tok.calibrate(batch["gt"] * 2 - 1)
    module = TokenizerTraining(tok, LossConfig(l1_weight=1.0, mse_weight=1.0))
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    first, _ = module(batch, 0)
    for step in range(5):
        loss, _ = module(batch, step)
        opt.zero_grad()
        loss.backward()
        assert tok.quantizer.gains.grad is not None and tok.encoder.net[0].weight.grad is not None
        opt.step()
    with torch.no_grad():
        last, _ = module(batch, 5)
    assert float(last) < float(first.detach())
