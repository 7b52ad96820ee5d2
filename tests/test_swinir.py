"""SwinIR, DiffBIR layout: general_swinir_v1.ckpt's names load strictly; the net keeps the image size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from varestorer.archs.swinir import (
    SwinIR,
    SwinIRConfig,
    load_swinir,
    relative_position_index,
    shifted_window_mask,
    swinir_config_from_state_dict,
)

TINY = SwinIRConfig(embed_dim=12, depths=(2, 2), num_heads=(2, 3), window_size=4, upscale=4, unshuffle=4)


def _original_layout(model: SwinIR) -> dict[str, torch.Tensor]:
    """The state dict as the original stores it: plus the derived buffers, under state_dict/module."""
    state = dict(model.state_dict())
    for g, layer in enumerate(model.layers):
        for j, block in enumerate(layer.residual_group.blocks):
            prefix = f"layers.{g}.residual_group.blocks.{j}."
            state[prefix + "attn.relative_position_index"] = relative_position_index(block.window_size)
            if block.shift:
                state[prefix + "attn_mask"] = shifted_window_mask(16, 16, block.window_size, block.shift)
    return {"state_dict": {f"module.{k}": v for k, v in state.items()}}


def test_general_swinir_v1_names_and_shapes() -> None:
    with torch.device("meta"):
        model = SwinIR()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv_first.1.weight"] == (180, 192, 3, 3)  # pixel-unshuffle by 8 first
    assert shapes["layers.7.residual_group.blocks.5.attn.relative_position_bias_table"] == (225, 6)
    assert shapes["layers.0.residual_group.blocks.0.mlp.fc1.weight"] == (360, 180)
    assert shapes["conv_up3.weight"] == (64, 64, 3, 3) and "conv_up4.weight" not in shapes
    assert shapes["conv_last.weight"] == (3, 64, 3, 3)
    assert sum(v.numel() for v in model.state_dict().values()) == 15_792_587
    assert swinir_config_from_state_dict(model.state_dict()) == SwinIRConfig()  # read back off the shapes


def test_loads_diffbir_checkpoint_strictly_and_keeps_the_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SwinIR(TINY).eval()
    torch.save(_original_layout(model), tmp_path / "swinir.ckpt")
    loaded = load_swinir(tmp_path / "swinir.ckpt")
    assert loaded.config == TINY == swinir_config_from_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        out = loaded(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, model(x))
        assert loaded(torch.rand(1, 3, 50, 37)).shape == (1, 3, 50, 37)  # padded and cropped back
    state = _original_layout(model)
    del state["state_dict"]["module.layers.1.conv.bias"]
    torch.save(state, tmp_path / "broken.ckpt")
    with pytest.raises(ValueError, match="layers.1.conv.bias"):
        load_swinir(tmp_path / "broken.ckpt")


def test_window_attention_matches_a_per_window_loop() -> None:
    """Shifted windows: the batched attention equals attending inside each window of the rolled map."""
    torch.manual_seed(1)
    model = SwinIR(TINY).eval()
    block = model.layers[0].residual_group.blocks[1]  # shifted by 2
    H = W = 8
    x = torch.randn(1, H * W, 12)
    with torch.no_grad():
        fast = block(x, (H, W))
        h = torch.roll(block.norm1(x).view(1, H, W, 12), shifts=(-2, -2), dims=(1, 2))
        out = torch.zeros_like(h)
        region = torch.zeros(H, W)
        region[-4:, :] += 3
        region[-2:, :] += 3
        region[:, -4:] += 1
        region[:, -2:] += 1
        attn = block.attn
        bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(16, 16, -1)
        for r in range(0, H, 4):
            for c in range(0, W, 4):
                tokens = h[0, r : r + 4, c : c + 4].reshape(16, 12)
                labels = region[r : r + 4, c : c + 4].reshape(16)
                q, k, v = attn.qkv(tokens).view(16, 3, 2, 6).permute(1, 2, 0, 3)
                logits = (q * 6**-0.5) @ k.transpose(-1, -2) + bias.permute(2, 0, 1)
                logits = logits - 100.0 * (labels[:, None] != labels[None, :]).float()
                heads = logits.softmax(-1) @ v
                out[0, r : r + 4, c : c + 4] = attn.proj(heads.transpose(0, 1).reshape(16, 12)).view(4, 4, 12)
        slow = x + torch.roll(out, shifts=(2, 2), dims=(1, 2)).reshape(1, H * W, 12)
        slow = slow + block.mlp(block.norm2(slow))
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_not_a_swinir_file_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="not a SwinIR state dict"):
        load_swinir(tmp_path / "x.ckpt")
