"""SwinIR (Liang et al. 2021) in DiffBIR's real-world layout, the official VARestorer's stage-one cleaner.

Facts (DiffBIR's ``general_swinir_v1.ckpt``, as the official ``tools/run_varestorer.py`` builds it):
embed width 180, 8 residual Swin groups (RSTB) of 6 blocks with 6 heads, 8x8 windows, MLP ratio 2,
a pixel-unshuffle by 8 before the first conv and a ``nearest+conv`` x8 upsampler, so the network maps
an image to one of the same size. Inputs are RGB in [0, 1]; the mean (0.4488, 0.4371, 0.4040) is
subtracted first and added back at the end; the output is not clamped. Shifted windows are masked with
-100 (not -inf) across wrapped borders, as in the original.

Parameter names are the checkpoint's own (``layers.{i}.residual_group.blocks.{j}.attn.qkv.weight``...);
the two derived buffers the original stores (``relative_position_index``, ``attn_mask``) are rebuilt here
and dropped when loading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varestorer.archs.swinir_config import SwinIRConfig
from varestorer.checkpoint import check_state_dict, load_state_dict

_RGB_MEAN = (0.4488, 0.4371, 0.4040)
# Buffers the original registers persistently but that are functions of the shapes.
DERIVED_SUFFIXES = ("relative_position_index", "attn_mask")


# ------------------------------------------------------------------------------------------- helpers
def window_partition(x_BHWC: Tensor, size: int) -> Tensor:
    """(B, H, W, C) -> (B * H/size * W/size, size * size, C) windows, row-major."""
    B, H, W, C = x_BHWC.shape
    x = x_BHWC.view(B, H // size, size, W // size, size, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, C)


def window_merge(windows: Tensor, size: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // size, W // size, size, size, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def relative_position_index(size: int) -> Tensor:
    """(N, N) int64 index into the ((2s-1)^2, heads) bias table for every pair of tokens of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (size - 1)
    return rel[..., 0] * (2 * size - 1) + rel[..., 1]


def shifted_window_mask(H: int, W: int, size: int, shift: int, device: torch.device | None = None) -> Tensor:
    """(windows, N, N) additive mask: 0 within a region, -100 between regions cut by the cyclic shift."""
    regions = torch.zeros(1, H, W, 1, device=device)
    cuts = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            regions[:, rows, cols, :] = label
            label += 1
    windows = window_partition(regions, size).squeeze(-1)  # (nW, N)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


# -------------------------------------------------------------------------------------------- blocks
class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    relative_position_index: Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.window_size = num_heads, window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x_BNC: Tensor, mask: Tensor | None) -> Tensor:
        """(windows*B, N, C) -> same; ``mask`` (windows, N, N) additive or None."""
        B_, N, C = x_BNC.shape
        q, k, v = self.qkv(x_BNC).view(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        logits = logits + bias.permute(2, 0, 1).unsqueeze(0).to(logits.dtype)
        if mask is not None:
            windows = mask.shape[0]
            logits = logits.view(B_ // windows, windows, self.num_heads, N, N) + mask[None, :, None].to(logits.dtype)
            logits = logits.view(B_, self.num_heads, N, N)
        out = logits.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B_, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """LayerNorm -> (shifted) window attention -> residual; LayerNorm -> MLP -> residual."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x_BLC: Tensor, hw: tuple[int, int]) -> Tensor:
        H, W = hw
        B, L, C = x_BLC.shape
        size, shift = self.window_size, self.shift
        h = self.norm1(x_BLC).view(B, H, W, C)
        mask = None
        if shift:
            h = torch.roll(h, shifts=(-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(H, W, size, shift, device=x_BLC.device)
        h = window_merge(self.attn(window_partition(h, size), mask), size, H, W)
        if shift:
            h = torch.roll(h, shifts=(shift, shift), dims=(1, 2))
        x_BLC = x_BLC + h.reshape(B, L, C)
        return x_BLC + self.mlp(self.norm2(x_BLC))


class _Blocks(nn.Module):
    """Holds the blocks as ``residual_group.blocks.{j}`` (the checkpoint's names)."""

    def __init__(self, blocks: list[SwinBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class ResidualSwinGroup(nn.Module):
    """RSTB: Swin blocks, a 3x3 conv on the image-shaped result, plus the group's input."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.residual_group = _Blocks(
            [
                SwinBlock(dim, num_heads, window_size, 0 if j % 2 == 0 else window_size // 2, mlp_ratio)
                for j in range(depth)
            ]
        )
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x_BLC: Tensor, hw: tuple[int, int]) -> Tensor:
        h = x_BLC
        for block in self.residual_group.blocks:
            h = block(h, hw)
        B, L, C = h.shape
        h = self.conv(h.transpose(1, 2).reshape(B, C, *hw)).flatten(2).transpose(1, 2)
        return h + x_BLC


class _PatchNorm(nn.Module):
    """``patch_embed.norm``: the LayerNorm applied to the flattened features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)


# ---------------------------------------------------------------------------------------------- model
class SwinIR(nn.Module):
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, scale*H, scale*W)`` (DiffBIR layout: the same size).

    Any H, W: the input is reflect-padded to a multiple of ``window_size * unshuffle`` and the
    result cropped back (the original pads only to the window size).
    """

    mean: Tensor

    def __init__(self, config: SwinIRConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SwinIRConfig()
        dim, feat = config.embed_dim, 64
        in_channels = 3 * (config.unshuffle or 1) ** 2
        conv = nn.Conv2d(in_channels, dim, 3, 1, 1)
        self.conv_first = nn.Sequential(nn.PixelUnshuffle(config.unshuffle), conv) if config.unshuffle else conv
        self.patch_embed = _PatchNorm(dim)
        self.layers = nn.ModuleList(
            ResidualSwinGroup(dim, depth, heads, config.window_size, config.mlp_ratio)
            for depth, heads in zip(config.depths, config.num_heads)
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, feat, 3, 1, 1), nn.LeakyReLU())  # slope 0.01
        steps = int(math.log2(config.upscale))
        for index in range(1, steps + 1):
            self.add_module(f"conv_up{index}", nn.Conv2d(feat, feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)
        self.register_buffer("mean", torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self._steps = steps

    @property
    def scale(self) -> float:
        return self.config.scale

    def forward(self, x_B3HW: Tensor) -> Tensor:
        if x_B3HW.ndim != 4 or x_B3HW.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(x_B3HW.shape)}")
        H, W = x_B3HW.shape[-2:]
        multiple = self.config.window_size * (self.config.unshuffle or 1)
        pad_h, pad_w = (-H) % multiple, (-W) % multiple
        x = x_B3HW - self.mean.to(x_B3HW.dtype)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(H, W) > max(pad_h, pad_w) else "replicate")
        x = self.conv_first(x)
        hw = (x.shape[2], x.shape[3])
        h = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        for layer in self.layers:
            h = layer(h, hw)
        h = self.norm(h).transpose(1, 2).reshape(x.shape)
        x = self.conv_before_upsample(self.conv_after_body(h) + x)
        for index in range(1, self._steps + 1):
            conv = getattr(self, f"conv_up{index}")
            x = self.lrelu(conv(F.interpolate(x, scale_factor=2, mode="nearest")))
        x = self.conv_last(self.lrelu(self.conv_hr(x))) + self.mean.to(x.dtype)
        out_h, out_w = round(H * self.scale), round(W * self.scale)
        return x[:, :, :out_h, :out_w]


# -------------------------------------------------------------------------------------------- loading
def swinir_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The SwinIR tensors of a loaded checkpoint: unwraps ``state_dict`` (DiffBIR/Lightning), drops a
    ``module.`` prefix and the derived buffers."""
    state: Any = checkpoint
    if isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    out = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.rsplit(".", 1)[-1] in DERIVED_SUFFIXES:
            continue
        if not isinstance(value, Tensor):
            raise ValueError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        out[name] = value
    return out


def swinir_config_from_state_dict(state: Mapping[str, Tensor]) -> SwinIRConfig:
    """Read the shape off the tensors (embed width, groups, blocks, heads, window, MLP, factors)."""
    first = state.get("conv_first.1.weight", state.get("conv_first.weight"))
    table = state.get("layers.0.residual_group.blocks.0.attn.relative_position_bias_table")
    fc1 = state.get("layers.0.residual_group.blocks.0.mlp.fc1.weight")
    if first is None or table is None or fc1 is None:
        raise ValueError("not a SwinIR state dict (no conv_first / layers.0...attn.relative_position_bias_table)")
    groups = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.")})
    depths = tuple(
        len({k.split(".")[4] for k in state if k.startswith(f"layers.{g}.residual_group.blocks.")}) for g in groups
    )
    heads = tuple(
        int(state[f"layers.{g}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1]) for g in groups
    )
    window = (math.isqrt(int(table.shape[0])) + 1) // 2
    unshuffle = math.isqrt(int(first.shape[1]) // 3) if "conv_first.1.weight" in state else None
    upscale = 2 ** sum(1 for k in state if k.startswith("conv_up") and k.endswith(".weight"))
    return SwinIRConfig(
        embed_dim=int(first.shape[0]),
        depths=depths,
        num_heads=heads,
        window_size=window,
        mlp_ratio=int(fc1.shape[0]) / int(fc1.shape[1]),
        upscale=upscale,
        unshuffle=unshuffle,
    )


def load_swinir(path: str | Path, *, dtype: torch.dtype = torch.float32) -> SwinIR:
    """A :class:`SwinIR` from ``general_swinir_v1.ckpt`` (or any file of this layout), strictly, in ``eval()``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, not SwinIR, or missing / unexpected / mis-shaped tensors (all listed).
    """
    state = swinir_state_dict(load_state_dict(path))
    config = swinir_config_from_state_dict(state)
    with torch.device("meta"):
        model = SwinIR(config)
    check_state_dict(model, state, what=str(path))
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    # Non-persistent buffers are still on the meta device: rebuild them.
    model.mean = torch.tensor(_RGB_MEAN).view(1, 3, 1, 1)
    for module in model.modules():
        if isinstance(module, WindowAttention):
            module.relative_position_index = relative_position_index(module.window_size)
    return model.eval().requires_grad_(False)


__all__ = ["SwinIR", "SwinIRConfig", "load_swinir", "swinir_config_from_state_dict", "swinir_state_dict"]
