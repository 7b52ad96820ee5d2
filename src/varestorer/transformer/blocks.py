"""Infinity's transformer pieces: self-/cross-attention, FFN, AdaLN block, text pooling, head norm.

Parameter names and shapes follow Infinity (Infinity `infinity/models/basic.py`, docs/sources.md) so that its
checkpoints load unchanged. The attention projections are real ``nn.Linear`` modules whose
``.weight`` is read at call time (``F.linear(x, self.mat_qkv.weight, bias)``), never cached: LoRA
adapters injected as parametrizations of ``.weight`` are therefore always seen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varestorer.nn.attention import attention
from varestorer.transformer.rope import apply_rope

# Upper bound of the learned cos-attention logit scale (Infinity clamps the log at ln 100).
_MAX_LOG_SCALE = math.log(100.0)


class RMSNorm(nn.Module):
    """RMS normalisation over the last axis with a learned gain (``weight``), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head cos-attention with 2-D RoPE and an optional past key/value prefix.

    q and k are L2-normalised per head, q is multiplied by exp(min(``scale_mul_1H11``, ln 100))
    (a learned per-head temperature, initialised to 4) and the softmax scale is 1.
    """

    zero_k_bias: torch.Tensor  # buffer

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self.mat_qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width))
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
        self.proj = nn.Linear(width, width)

    def forward(
        self,
        x_BLC: Tensor,
        rope_2Lp: Tensor,
        mask: Tensor | None,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend from the L new tokens to ``past`` + themselves.

        Args:
            x_BLC: normalised input of the new tokens (B, L, C).
            rope_2Lp: RoPE cos/sin of the new tokens (2, L, c/2).
            mask: boolean (L, S) or ``None``; S = past length + L.
            past: cached (keys, values) (B, H, S - L, c), keys already rotated.

        Returns:
            output (B, L, C) and the (keys, values) of past + new tokens (B, H, S, c).
        """
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        # q and k together: one L2 normalisation (F.normalize's max(norm, 1e-12)) times their scale
        # (q: the learned temperature, k: 1) and one RoPE call, instead of one pass per step and tensor.
        qk_BL2Hc = qkv[:, :, :2]
        log_scale = self.scale_mul_1H11.clamp(max=_MAX_LOG_SCALE).view(1, self.num_heads)
        scale_2H1 = torch.cat((log_scale.exp(), torch.ones_like(log_scale))).to(qkv.dtype).unsqueeze(-1)
        norm = torch.linalg.vector_norm(qk_BL2Hc, dim=-1, keepdim=True).clamp_min(1e-12)
        qk_BL2Hc = apply_rope(qk_BL2Hc * (scale_2H1 / norm), rope_2Lp, token_dim=-4)
        qk_2BHLc = qk_BL2Hc.permute(2, 0, 3, 1, 4)
        q_BHLc, k_BHLc = qk_2BHLc.unbind(0)
        v_BHLc = qkv[:, :, 2].transpose(1, 2)
        if past is not None:
            k_BHLc = torch.cat((past[0], k_BHLc), dim=2)
            v_BHLc = torch.cat((past[1], v_BHLc), dim=2)
        out_BHLc = attention(q_BHLc, k_BHLc, v_BHLc, mask, scale=1.0)
        return self.proj(out_BHLc.transpose(1, 2).reshape(B, L, C)), (k_BHLc, v_BHLc)


class CrossAttention(nn.Module):
    """Multi-head attention from image tokens to (projected) text tokens; plain 1/sqrt(c) scale."""

    zero_k_bias: torch.Tensor  # buffer

    def __init__(self, width: int, kv_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self.mat_q = nn.Linear(width, width)
        self.mat_kv = nn.Linear(kv_dim, 2 * width, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, x_BLC: Tensor, text_BTC: Tensor, text_mask_BT: Tensor) -> Tensor:
        """(B, L, C) queries attend to (B, T, kv_dim) text tokens where ``text_mask_BT`` is True."""
        B, L, C = x_BLC.shape
        T = text_BTC.shape[1]
        q_BHLc = self.mat_q(x_BLC).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        kv = F.linear(text_BTC, self.mat_kv.weight, torch.cat((self.zero_k_bias, self.v_bias)))
        k_BHTc, v_BHTc = kv.view(B, T, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out_BHLc = attention(q_BHLc, k_BHTc, v_BHTc, text_mask_BT[:, None, None, :])
        return self.proj(out_BHLc.transpose(1, 2).reshape(B, L, C))


class AttentivePoolAttention(nn.Module):
    """Cross-attention with a learned query (``mat_q`` (1, heads, c)) that pools text into one vector.

    Infinity's layout (``TextAttentivePool``): ``text_dim / head_dim`` heads, but the heads split the
    *output* width C, so keys/values are projected from the text width D to C and each head is
    C / heads wide. With C == D (Infinity-2B) that is plain D-wide pooling; the 125M (C = 768) and 8B
    (C = 3584) widths need the general form.
    """

    zero_k_bias: torch.Tensor  # buffer

    def __init__(self, text_dim: int, out_dim: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = text_dim // head_dim
        if out_dim % self.num_heads:
            raise ValueError(f"pooled width {out_dim} must split into {self.num_heads} heads")
        self.out_dim, self.head_dim = out_dim, out_dim // self.num_heads
        self.mat_q = nn.Parameter(torch.randn(1, self.num_heads, self.head_dim) * 0.02)
        self.mat_kv = nn.Linear(text_dim, 2 * out_dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(out_dim))
        self.register_buffer("zero_k_bias", torch.zeros(out_dim))
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, text_BTD: Tensor, text_mask_BT: Tensor) -> Tensor:
        """(B, T, D) text with a (B, T) validity mask -> (B, out_dim) pooled vector."""
        B, T, _ = text_BTD.shape
        kv = F.linear(text_BTD, self.mat_kv.weight, torch.cat((self.zero_k_bias, self.v_bias)))
        k_BHTc, v_BHTc = kv.view(B, T, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q_BH1c = self.mat_q.to(text_BTD.dtype).unsqueeze(2).expand(B, -1, -1, -1)
        out_BH1c = attention(q_BH1c, k_BHTc, v_BHTc, text_mask_BT[:, None, None, :])
        return self.proj(out_BH1c.reshape(B, self.out_dim))


class TextAttentivePool(nn.Module):
    """Infinity's ``text_proj_for_sos``: the pooled text vector that becomes the start token."""

    def __init__(self, text_dim: int, out_dim: int, head_dim: int) -> None:
        super().__init__()
        self.ca = AttentivePoolAttention(text_dim, out_dim, head_dim)

    def forward(self, text_BTD: Tensor, text_mask_BT: Tensor) -> Tensor:
        return self.ca(text_BTD, text_mask_BT)


class FFN(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _drop_path(x_BLC: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: zero a whole sample's branch with probability ``rate`` (training only).

    Uses the global torch RNG: modules have no generator argument; seed it for reproducible training.
    """
    if rate <= 0.0 or not training:
        return x_BLC
    keep = torch.rand(x_BLC.shape[0], 1, 1, device=x_BLC.device) >= rate
    return x_BLC * keep.to(x_BLC.dtype) / (1.0 - rate)


class CrossAttnBlock(nn.Module):
    """One Infinity block: AdaLN self-attention, cross-attention to text, AdaLN FFN.

    AdaLN parameters are the shared modulation (B, 1, 6, C) plus this block's ``ada_gss`` (1, 1, 6, C),
    split into gamma1, gamma2, scale1, scale2, shift1, shift2.
    """

    def __init__(self, width: int, num_heads: int, ffn_dim: int, eps: float, drop_path: float) -> None:
        super().__init__()
        self.drop_path = drop_path
        self.ln_wo_grad = nn.LayerNorm(width, eps=eps, elementwise_affine=False)
        self.sa = SelfAttention(width, num_heads)
        self.ca = CrossAttention(width, width, num_heads)
        self.ca_norm = nn.LayerNorm(width, eps=eps)
        self.ffn = FFN(width, ffn_dim)
        self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, width) / math.sqrt(width))

    def forward(
        self,
        x_BLC: Tensor,
        ada_B16C: Tensor,
        text_BTC: Tensor,
        text_mask_BT: Tensor,
        rope_2Lp: Tensor,
        mask: Tensor | None,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Returns the updated (B, L, C) tokens and this layer's (keys, values) (see ``SelfAttention``)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (ada_B16C + self.ada_gss).unbind(2)  # each (B, 1, C)
        # addcmul: modulation and gated residuals in one pass each (same values as a * b + c).
        h_BLC = torch.addcmul(shift1, self.ln_wo_grad(x_BLC), 1 + scale1)
        h_BLC, kv = self.sa(h_BLC, rope_2Lp, mask, past)
        x_BLC = self._gated_residual(x_BLC, h_BLC, gamma1)
        x_BLC = x_BLC + self.ca(self.ca_norm(x_BLC), text_BTC, text_mask_BT)
        h_BLC = self.ffn(torch.addcmul(shift2, self.ln_wo_grad(x_BLC), 1 + scale2))
        x_BLC = self._gated_residual(x_BLC, h_BLC, gamma2)
        return x_BLC, kv

    def _gated_residual(self, x_BLC: Tensor, h_BLC: Tensor, gamma_B1C: Tensor) -> Tensor:
        """x + drop_path(h * gamma); fused when drop path is off."""
        if self.drop_path > 0.0 and self.training:
            return x_BLC + _drop_path(h_BLC * gamma_B1C, self.drop_path, self.training)
        return torch.addcmul(x_BLC, h_BLC, gamma_B1C)


class BlockChunk(nn.Module):
    """A group of consecutive blocks, stored as ``.module.{j}`` (Infinity's ``block_chunks`` layout)."""

    def __init__(self, blocks: list[CrossAttnBlock]) -> None:
        super().__init__()
        self.module = nn.ModuleList(blocks)


class AdaLNBeforeHead(nn.Module):
    """Non-affine LayerNorm modulated by (1 + scale, shift) = ``ada_lin(cond)`` before the head."""

    def __init__(self, width: int, cond_dim: int, eps: float) -> None:
        super().__init__()
        self.width = width
        self.ln_wo_grad = nn.LayerNorm(width, eps=eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * width))

    def forward(self, x_BLC: Tensor, cond_BD: Tensor) -> Tensor:
        scale_B1C, shift_B1C = self.ada_lin(cond_BD).view(-1, 1, 2, self.width).unbind(2)
        return self.ln_wo_grad(x_BLC) * (1 + scale_B1C) + shift_B1C
