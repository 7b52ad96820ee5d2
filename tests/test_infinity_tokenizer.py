"""Official Infinity BSQ-VAE checkpoints: key names/shapes, both naming schemes, strict errors.

The expected names are written here from Infinity `flux_vqgan.py` (docs/sources.md), not from our model code.
"""

from __future__ import annotations

import pytest
import torch

from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import TokenizerConfig
from varestorer.tokenizer.infinity import infinity_vae_state_dict, load_infinity_tokenizer, normalize_infinity_key


def official_shapes(ch: int, mult: tuple[int, ...], d: int, *, wrapped: bool) -> dict[str, tuple[int, ...]]:
    """Infinity's VAE state-dict names and shapes (2 res blocks/level, 3 in the decoder)."""
    conv = ".conv" if wrapped else ""
    norm = ".norm" if wrapped else ""
    out: dict[str, tuple[int, ...]] = {}

    def add_conv(name: str, cin: int, cout: int, k: int = 3) -> None:
        out[f"{name}{conv}.weight"] = (cout, cin, k, k)
        out[f"{name}{conv}.bias"] = (cout,)

    def add_norm(name: str, c: int) -> None:
        out[f"{name}{norm}.weight"] = (c,)
        out[f"{name}{norm}.bias"] = (c,)

    def add_block(name: str, cin: int, cout: int) -> None:
        add_norm(f"{name}.norm1", cin)
        add_conv(f"{name}.conv1", cin, cout)
        add_norm(f"{name}.norm2", cout)
        add_conv(f"{name}.conv2", cout, cout)
        if cin != cout:
            add_conv(f"{name}.nin_shortcut", cin, cout, 1)

    add_conv("encoder.conv_in", 3, ch)
    c = ch
    for level, m in enumerate(mult):
        for b in range(2):
            add_block(f"encoder.down.{level}.block.{b}", c if b == 0 else ch * m, ch * m)
        c = ch * m
        if level < len(mult) - 1:
            add_conv(f"encoder.down.{level}.downsample.conv", c, c)
    add_block("encoder.mid.block_1", c, c)
    add_block("encoder.mid.block_2", c, c)
    add_norm("encoder.norm_out", c)
    add_conv("encoder.conv_out", c, d)
    add_conv("decoder.conv_in", d, c)
    add_block("decoder.mid.block_1", c, c)
    add_block("decoder.mid.block_2", c, c)
    for level in reversed(range(len(mult))):
        for b in range(3):
            add_block(f"decoder.up.{level}.block.{b}", c if b == 0 else ch * mult[level], ch * mult[level])
        c = ch * mult[level]
        if level > 0:
            add_conv(f"decoder.up.{level}.upsample.conv", c, c)
    add_norm("decoder.norm_out", c)
    add_conv("decoder.conv_out", c, 3)
    out["quantizer.lfq.mask"] = (d,)
    out["quantize.lfq.mask"] = (d,)
    return out


def test_d32_preset_has_the_official_names_and_shapes() -> None:
    with torch.device("meta"):
        model = MultiScaleTokenizer.from_preset("infinity-d32")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_shapes(128, (1, 2, 4, 4, 4), 32, wrapped=True)
    assert ours["encoder.conv_out.conv.weight"] == (32, 512, 3, 3) and ours["decoder.conv_out.conv.weight"] == (
        3,
        128,
        3,
        3,
    )
    assert ours["decoder.up.0.block.0.nin_shortcut.conv.weight"] == (128, 256, 1, 1)
    assert (
        "encoder.down.4.downsample.conv.conv.weight" not in ours
        and "decoder.up.0.upsample.conv.conv.weight" not in ours
    )
    assert sum(p.numel() for p in model.parameters()) > 100_000_000


@pytest.mark.parametrize("d", [16, 24, 64])
def test_other_infinity_presets_match(d: int) -> None:
    with torch.device("meta"):
        model = MultiScaleTokenizer.from_preset(f"infinity-d{d}")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_shapes(
        128, (1, 2, 4, 4, 4), d, wrapped=True
    )


def test_key_normalisation() -> None:
    assert normalize_infinity_key("encoder.conv_in.weight") == "encoder.conv_in.conv.weight"
    assert normalize_infinity_key("encoder.conv_in.conv.weight") == "encoder.conv_in.conv.weight"
    assert normalize_infinity_key("encoder.down.0.downsample.conv.bias") == "encoder.down.0.downsample.conv.conv.bias"
    assert (
        normalize_infinity_key("encoder.down.0.downsample.conv.conv.bias") == "encoder.down.0.downsample.conv.conv.bias"
    )
    assert normalize_infinity_key("decoder.mid.block_1.norm1.weight") == "decoder.mid.block_1.norm1.norm.weight"
    assert normalize_infinity_key("a.nin_shortcut.bias") == "a.nin_shortcut.conv.bias"
    assert normalize_infinity_key("quantizer.lfq.mask") == "quantizer.lfq.mask"
    for plain, wrapped in zip(
        official_shapes(8, (1, 2), 4, wrapped=False), official_shapes(8, (1, 2), 4, wrapped=True)
    ):
        assert normalize_infinity_key(plain) == wrapped


# Same structure as d32 (5 levels, 2 res blocks, 32 bits, Infinity buffers) at 1/16 of the width.
NARROW = TokenizerConfig(token_dim=32, base_channels=8, channel_multipliers=(1, 2, 4, 4, 4), infinity_buffers=True)


def synthetic(wrapped: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in official_shapes(8, (1, 2, 4, 4, 4), 32, wrapped=wrapped).items():
        if name.endswith("mask"):
            state[name] = 2 ** torch.arange(31, -1, -1, dtype=torch.int64)
        else:
            state[name] = torch.randn(shape, generator=g) * 0.05
    return state


@pytest.mark.parametrize("wrapped", [False, True])
def test_official_checkpoint_loads_strictly_under_both_schemes(tmp_path, wrapped: bool) -> None:
    state = synthetic(wrapped)
    path = tmp_path / "infinity_vae_d32reg.pth"
    torch.save({"vae": state, "args": {"lr": 1.0}}, path)
    model = load_infinity_tokenizer(path, NARROW)
    assert not model.training
    conv_in = state["encoder.conv_in.conv.weight" if wrapped else "encoder.conv_in.weight"]
    assert torch.equal(model.encoder.conv_in.conv.weight, conv_in)
    norm = state["decoder.norm_out.norm.bias" if wrapped else "decoder.norm_out.bias"]
    assert torch.equal(model.decoder.norm_out.norm.bias, norm)
    assert model.quantize is model.quantizer
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert model.decode(model.tokenize(x).f_hat).shape == (1, 3, 32, 32)


def test_both_schemes_give_the_same_model(tmp_path) -> None:
    torch.save({"vae": synthetic(False)}, tmp_path / "plain.pth")
    torch.save(synthetic(True), tmp_path / "bare.pth")  # a bare state dict is accepted too
    a = load_infinity_tokenizer(tmp_path / "plain.pth", NARROW).state_dict()
    b = load_infinity_tokenizer(tmp_path / "bare.pth", NARROW).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_section_and_missing_mask(tmp_path) -> None:
    state = synthetic(True)
    del state["quantize.lfq.mask"]  # a constant buffer: filled in
    torch.save({"vae": synthetic(True, seed=1), "ema": state}, tmp_path / "ckpt.pth")
    model = load_infinity_tokenizer(tmp_path / "ckpt.pth", NARROW, ema=True)
    assert torch.equal(model.encoder.conv_out.conv.bias, state["encoder.conv_out.conv.bias"])
    with pytest.raises(ValueError, match="no 'ema'"):
        torch.save({"vae": state}, tmp_path / "no_ema.pth")
        load_infinity_tokenizer(tmp_path / "no_ema.pth", NARROW, ema=True)


def test_missing_and_unexpected_keys_are_listed(tmp_path) -> None:
    state = synthetic(False)
    del state["decoder.mid.block_1.conv1.weight"]
    state["encoder.down.0.attn.0.qkv.weight"] = torch.zeros(3)
    torch.save({"vae": state}, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as info:
        load_infinity_tokenizer(tmp_path / "bad.pth", NARROW)
    message = str(info.value)
    assert "1 missing: decoder.mid.block_1.conv1.conv.weight" in message
    assert "1 unexpected: encoder.down.0.attn.0.qkv.weight" in message and "\n" not in message


def test_wrong_width_and_wrong_bits_are_clear(tmp_path) -> None:
    torch.save({"vae": synthetic(True)}, tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match="wrong shape"):
        load_infinity_tokenizer(
            tmp_path / "narrow.pth",
            TokenizerConfig(token_dim=32, base_channels=16, channel_multipliers=(1, 2, 4, 4, 4), infinity_buffers=True),
        )
    with pytest.raises(ValueError, match="d=32 tokenizer.*infinity-d32"):
        load_infinity_tokenizer(tmp_path / "narrow.pth", "infinity-d16")


def test_unreadable_and_foreign_files(tmp_path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"\x00not a torch file")
    with pytest.raises(ValueError, match="junk.pth"):
        load_infinity_tokenizer(tmp_path / "junk.pth", NARROW)
    torch.save({"gpt": {"w": torch.zeros(1)}}, tmp_path / "gpt.pth")
    with pytest.raises(ValueError, match="no 'vae' state dict"):
        load_infinity_tokenizer(tmp_path / "gpt.pth", NARROW)
    with pytest.raises(FileNotFoundError):
        load_infinity_tokenizer(tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        load_infinity_tokenizer(tmp_path / "gpt.pth", "infinity-d33")
    with pytest.raises(ValueError, match="not a tensor"):
        infinity_vae_state_dict({"encoder.conv_in.weight": [1, 2]})


@pytest.mark.slow
def test_full_size_d32_round_trip(tmp_path) -> None:
    state = {
        k: torch.zeros(v) if not k.endswith("mask") else torch.arange(32)
        for k, v in official_shapes(128, (1, 2, 4, 4, 4), 32, wrapped=False).items()
    }
    torch.save({"vae": state}, tmp_path / "infinity_vae_d32reg.pth")
    model = load_infinity_tokenizer(tmp_path / "infinity_vae_d32reg.pth")
    assert sum(p.numel() for p in model.parameters()) > 100_000_000


def test_loaded_official_weights_save_as_our_checkpoint(tmp_path) -> None:
    torch.save({"vae": synthetic(False)}, tmp_path / "official.pth")
    model = load_infinity_tokenizer(tmp_path / "official.pth", NARROW)
    model.save_pretrained(tmp_path / "ours")
    again = MultiScaleTokenizer.from_pretrained(tmp_path / "ours")
    assert again.config == NARROW and again.quantize is again.quantizer
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
