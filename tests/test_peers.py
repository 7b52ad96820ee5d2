"""Peer archs: shapes, Real-ESRGAN key names, save/load round trips, detection from state dicts."""

from __future__ import annotations

import pytest
import torch

from varestorer.archs.rrdbnet import RRDBNet, RRDBNetConfig
from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.foreign.peers import arch_from_state_dict, build_peer, load_peer, load_precleaner, peer_presets
from varestorer.models.precleaner import PreCleaner


def test_srvgg_shapes_keys_and_residual() -> None:
    model = SRVGGNetCompact(SRVGGConfig(num_feat=8, num_conv=2, upscale=4))
    keys = list(model.state_dict())
    expected = ["body.0.weight", "body.0.bias", "body.1.weight", "body.2.weight", "body.2.bias", "body.3.weight"]
    assert keys == [*expected, "body.4.weight", "body.4.bias", "body.5.weight", "body.6.weight", "body.6.bias"]
    x = torch.rand(2, 3, 5, 7)
    assert model(x).shape == (2, 3, 20, 28)
    torch.nn.init.zeros_(model.body[-1].weight)
    torch.nn.init.zeros_(model.body[-1].bias)
    # With a zero last conv the output is exactly the nearest-upsampled input.
    expected = x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert torch.equal(model(x), expected)


def test_default_presets_match_published_sizes() -> None:
    general = build_peer("realesr-general-x4v3")
    assert sum(p.numel() for p in general.parameters()) == 1_213_296  # 64 feat, 32 convs, PReLU
    plus = RRDBNet(RRDBNetConfig())
    assert sum(p.numel() for p in plus.parameters()) == 16_697_987  # RRDBNet x4plus
    assert {"conv_first.weight", "body.22.rdb3.conv5.bias", "conv_up2.weight", "conv_hr.bias"} <= set(plus.state_dict())
    assert set(peer_presets()) >= {"realesrgan-x4plus", "realesr-general-x4v3", "precleaner-1x"}


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdbnet_scales(scale: int) -> None:
    model = RRDBNet(RRDBNetConfig(num_feat=8, num_block=1, num_grow_ch=4, scale=scale))
    assert model.size_multiple == 4 // scale
    assert model(torch.rand(1, 3, 8, 12)).shape == (1, 3, 8 * scale, 12 * scale)


def test_unknown_preset_and_bad_scale() -> None:
    with pytest.raises(ValueError, match="unknown peer arch"):
        build_peer("nope")
    with pytest.raises(ValueError, match="scale must be"):
        RRDBNet(RRDBNetConfig(scale=3))


@pytest.mark.parametrize(
    "model",
    [
        SRVGGNetCompact(SRVGGConfig(num_feat=8, num_conv=3, upscale=2)),
        SRVGGNetCompact(SRVGGConfig(num_feat=8, num_conv=1, upscale=1, act_type="relu")),
        RRDBNet(RRDBNetConfig(num_feat=8, num_block=2, num_grow_ch=4, scale=2)),
    ],
    ids=["srvgg-x2", "srvgg-x1-relu", "rrdb-x2"],
)
def test_detect_and_load_every_format(model, tmp_path) -> None:
    from safetensors.torch import save_file

    x = torch.rand(1, 3, 8, 8)
    reference = model.eval()(x)
    rebuilt = arch_from_state_dict(model.state_dict())
    assert rebuilt.config == model.config
    torch.save({"params_ema": model.state_dict()}, tmp_path / "m.pth")
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    model.save_pretrained(tmp_path / "folder")
    for path in (tmp_path / "m.pth", tmp_path / "m.safetensors", tmp_path / "folder"):
        assert torch.allclose(load_peer(path)(x), reference, atol=1e-6), path


def test_load_peer_errors(tmp_path) -> None:
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="unrecognised state dict"):
        load_peer(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        load_peer(tmp_path / "missing.pth")
    (tmp_path / "only.param").write_text("7767517\n0 0\n")
    with pytest.raises(FileNotFoundError, match="need both"):
        load_peer(tmp_path / "only.param")


def test_precleaner_keeps_size_for_x1_and_x4(tmp_path) -> None:
    x = torch.rand(1, 3, 9, 11)
    same = PreCleaner(build_peer("precleaner-1x"))
    assert same(x).shape == x.shape
    four = SRVGGNetCompact(SRVGGConfig(num_feat=8, num_conv=1, upscale=4))
    four.save_pretrained(tmp_path / "x4")
    cleaner = load_precleaner(tmp_path / "x4")
    out = cleaner(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_a_precleaner_has_one_slot_in_front_or_in_place_of_the_models_own() -> None:
    from dataclasses import replace

    from varestorer.inference.restorer import Restorer
    from varestorer.models.precleaner import PreCleaned
    from varestorer.models.student import Student
    from varestorer.models.student_config import STUDENT_PRESETS

    cleaner = PreCleaner(build_peer("precleaner-1x")).eval()
    peer = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2)).eval()
    restorer = Restorer(peer, device="cpu", precleaner=cleaner)
    assert isinstance(restorer.model, PreCleaned) and restorer.model.model is peer  # the peer itself is unchanged
    lq = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(restorer.model(lq), peer(cleaner(lq)))
    student = Student(replace(STUDENT_PRESETS["tiny"], precleaner=SRVGGConfig(num_feat=4, num_conv=1, upscale=1)))
    student.eval()
    own = student.precleaner
    swapped = Restorer(student, device="cpu", precleaner=cleaner).model  # takes the place of the student's own
    assert swapped is not student and swapped.precleaner.net is cleaner.net and student.precleaner is own
    assert swapped.encoder is student.encoder and swapped.decoder is student.decoder  # the rest is shared
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = student.restore_encoded(student.encode(cleaner(lq))).sr
        assert torch.allclose(swapped(lq), expected)
        assert not torch.allclose(student(lq), expected)  # the student itself still runs its own
    four = PreCleaner(SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=4))).eval()
    with pytest.raises(ValueError, match="own pre-cleaner upsamples x1: a x4 one cannot take its place"):
        Restorer(student, device="cpu", precleaner=four)
