"""The lite TAEF2 variant (no full-resolution blocks): loading that names the dropped keys, round trip,
the speed-path layout (channels_last) leaving outputs unchanged, and a distillation step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from test_taef2 import released_layout, synthetic_files
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.tokenizer.taef2 import TAEF2_PRESETS, TAEF2Tokenizer, derive_taef2, dropped_keys, load_taef2

TINY = TAEF2_PRESETS["taef2-tiny"]
LITE = TAEF2_PRESETS["taef2-tiny-lite"]
DROPPED = sorted(
    [f"encoder.net.1.conv.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    + [f"decoder.net.18.conv.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
)


def test_the_lite_variant_drops_exactly_the_two_full_resolution_blocks() -> None:
    assert dropped_keys(LITE) == DROPPED
    assert dropped_keys(TINY) == []
    full, lite = TAEF2Tokenizer(TAEF2_PRESETS["taef2"]), TAEF2Tokenizer(TAEF2_PRESETS["taef2-lite"])
    removed = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in lite.parameters())
    assert removed == 2 * 3 * (64 * 64 * 9 + 64)
    for half in ("encoder", "decoder"):
        layout = {k for k in released_layout(half)}
        assert set(getattr(lite, half).net.state_dict()) == layout - {k.split(".net.")[1] for k in DROPPED}


def test_released_files_load_strictly_into_the_lite_variant(tmp_path: Path) -> None:
    folder = synthetic_files(tmp_path)
    full = load_taef2(folder, TINY, check_sha256=False)
    lite = load_taef2(folder, LITE, check_sha256=False)
    kept = lite.state_dict()
    assert set(full.state_dict()) - set(kept) == set(DROPPED)
    assert all(torch.equal(v, full.state_dict()[k]) for k, v in kept.items())
    # A file that already lacks the block is not a released half: one clear error, not a silent load.
    broken = tmp_path / "broken"
    broken.mkdir()
    synthetic_files(broken)
    state = torch.load(broken / "taef2_encoder.pth", weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("1.")}, broken / "taef2_encoder.pth")
    with pytest.raises(ValueError, match=r"no 1\.\* tensors to leave out"):
        load_taef2(broken, LITE, check_sha256=False)
    with pytest.raises(ValueError, match="missing"):
        load_taef2(broken, TINY, check_sha256=False)


def test_derive_keeps_every_other_tensor_and_names_the_dropped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = TAEF2Tokenizer(TINY)
    source.calibrate(torch.rand(2, 3, 32, 32) * 2 - 1)
    lite, dropped = derive_taef2(source, LITE)
    assert dropped == DROPPED
    for key, value in lite.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    with pytest.raises(ValueError, match="wrong shape"):
        derive_taef2(source, replace(LITE, token_dim=4))
    with pytest.raises(ValueError, match="no full-resolution blocks"):
        derive_taef2(lite, TINY)
    # Saved and reopened through the family registry, strictly.
    lite.save_pretrained(tmp_path / "lite")
    back = load_tokenizer(tmp_path / "lite")
    assert back.config == LITE and torch.equal(back.quantizer.gains, source.quantizer.gains)


def test_lite_round_trip_on_a_tiny_image() -> None:
    torch.manual_seed(0)
    tok = TAEF2Tokenizer(LITE).eval()
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        tokens = tok.tokenize(x)
        rec = tok.decode(tokens.f_hat)
    assert rec.shape == x.shape and rec.is_contiguous() and rec.abs().max() <= 1
    assert [tuple(b.shape) for b in tokens.labels] == [(1, h * w, 8) for h, w in tok.default_schedule(32, 48)]


def test_channels_last_layout_gives_the_contiguous_result() -> None:
    torch.manual_seed(0)
    tok = TAEF2Tokenizer(TINY).eval()
    assert tok.encoder.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        f = tok.encode(x)
        rec = tok.decode(f, clamp=False)
        plain_net = [m for m in (tok.encoder.net, tok.decoder.net)]
        for net in plain_net:
            net.to(memory_format=torch.contiguous_format)
        f_ref = tok.encode(x)
        rec_ref = tok.decode(f_ref, clamp=False)
    assert f.is_contiguous() and torch.allclose(f, f_ref, atol=1e-5) and torch.allclose(rec, rec_ref, atol=1e-5)


def test_a_distillation_step_lowers_the_latent_loss() -> None:
    from varestorer.training.train_tokenizer import LossConfig, TokenizerTraining

    torch.manual_seed(0)
    teacher = TAEF2Tokenizer(TINY)
    batch = {"gt": torch.rand(2, 3, 32, 32)}
    teacher.calibrate(batch["gt"] * 2 - 1)
    student, _ = derive_taef2(teacher, LITE)
    student.train().quantizer.requires_grad_(False)
    loss_config = LossConfig(l1_weight=0.0, mse_weight=0.0, commitment_weight=0.0, distill_weight=1.0)
    module = TokenizerTraining(student, loss_config, teacher)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-4)
    _, logs = module(batch, 0)
    first = float(logs["distill"])
    assert first > 0
    for step in range(5):
        loss, _ = module(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    _, logs = module(batch, 5)
    assert float(logs["distill"]) < first
    with pytest.raises(ValueError, match="needs model.distill_from"):
        TokenizerTraining(student, loss_config)


def test_init_from_with_changes_derives_the_lite_variant_and_trainable_parts(tmp_path: Path) -> None:
    from varestorer.training.train_tokenizer import ModelConfig, build_tokenizer, set_trainable

    torch.manual_seed(0)
    source = TAEF2Tokenizer(TINY)
    source.save_pretrained(tmp_path / "full")
    config = ModelConfig(
        preset="taef2-tiny-lite", init_from=str(tmp_path / "full"), changes={"full_resolution_blocks": False}
    )
    lite = build_tokenizer(config)
    assert isinstance(lite, TAEF2Tokenizer) and lite.config == LITE
    assert torch.equal(lite.decoder.net[19].weight, source.decoder.net[19].weight)
    assert build_tokenizer(ModelConfig(preset="taef2-tiny", init_from=str(tmp_path / "full"))).config == TINY
    set_trainable(lite, ("decoder",))
    assert not any(p.requires_grad for p in lite.encoder.parameters()) and not lite.quantizer.gains.requires_grad
    assert all(p.requires_grad for p in lite.decoder.parameters())
    with pytest.raises(ValueError, match="model.trainable takes"):
        set_trainable(lite, ("transformer",))
