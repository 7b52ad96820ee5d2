"""``NextScaleTransformer``: Infinity's bitwise next-scale-prediction transformer.

Sequence layout for a schedule S = ((h_1, w_1) = (1, 1), ..., (h_K, w_K)) of L tokens: position 0 is
the start token (pooled text + ``pos_start``), positions of scale k >= 2 are ``word_embed`` of the
teacher-forcing inputs (interpolated accumulated codes of scales < k). Each token gets the level
embedding of its scale once, and 2-D RoPE in every self-attention. The head returns two logits per
bit: ``logits[b, l, i, 0]`` / ``[..., 1]`` score bit i of token l being 0 / 1 (with a
``codebook_size`` V instead: ``logits[b, l, v]`` scores codebook entry v).

Two ways to run it, with the same blocks:
- :meth:`forward`: all scales at once, ``mask="causal"`` (block-causal by scale: a token sees its
  own scale and earlier ones; teacher training) or ``mask="full"`` (every token sees every token;
  the one-step student).
- :meth:`forward_scale`: one scale at a time against an explicit :class:`KVCache` (sampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from varestorer.checkpoint import PretrainedMixin
from varestorer.nn.attention import KVCache
from varestorer.tokenizer.scales import Schedule
from varestorer.transformer.blocks import AdaLNBeforeHead, BlockChunk, CrossAttnBlock, RMSNorm, TextAttentivePool
from varestorer.transformer.config import TRANSFORMER_PRESETS, TransformerConfig
from varestorer.transformer.rope import rope_extent, rope_table, scale_positions
from varestorer.transformer.text import TextCondition

MaskMode = Literal["causal", "full"]


def scale_levels(schedule: Schedule, *, device: torch.device | str | None = None) -> Tensor:
    """(L,) int64 scale index of every token of ``schedule``, built on ``device`` (no host sync)."""
    return torch.cat([torch.full((h * w,), k, dtype=torch.long, device=device) for k, (h, w) in enumerate(schedule)])


def block_causal_mask(schedule: Schedule, *, device: torch.device | str | None = None) -> Tensor:
    """(L, L) bool, True where query token may attend key token: level(query) >= level(key)."""
    levels = scale_levels(schedule, device=device)
    return levels[:, None] >= levels[None, :]


@dataclass(frozen=True)
class Conditioning:
    """Everything the blocks need from the text, computed once per batch.

    Attributes:
        pooled: (B, C) pooled text vector (start token and head modulation).
        adaln: (B, 1, 6, C) shared AdaLN modulation.
        text: (B, T, C) projected text tokens for cross-attention.
        text_mask: (B, T) bool validity of the text tokens.
    """

    pooled: Tensor
    adaln: Tensor
    text: Tensor
    text_mask: Tensor

    @property
    def batch_size(self) -> int:
        return self.pooled.shape[0]


class NextScaleTransformer(PretrainedMixin, nn.Module):
    """Infinity-style transformer over a multi-scale token pyramid (see the module docstring)."""

    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        C, D = config.width, config.text_dim
        # Learned "no caption" tokens for classifier-free guidance (Infinity: std 1.2 / sqrt(D)).
        self.cfg_uncond = nn.Parameter(torch.empty(config.text_max_length, D))
        self.text_norm = RMSNorm(D, eps=config.norm_eps)
        self.text_proj_for_sos = TextAttentivePool(D, C, config.pool_head_dim)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(D, C), nn.GELU(approximate="tanh"), nn.Linear(C, C))
        self.pos_start = nn.Parameter(torch.empty(1, 1, C))
        self.lvl_embed = nn.Embedding(config.num_levels, C)
        self.word_embed = nn.Linear(config.token_dim, C)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        rates = [config.drop_path * i / max(config.depth - 1, 1) for i in range(config.depth)]
        blocks = [CrossAttnBlock(C, config.num_heads, config.ffn_dim, config.norm_eps, rate) for rate in rates]
        if config.block_chunks > 1:
            per_chunk = config.depth // config.block_chunks
            self.block_chunks = nn.ModuleList(
                BlockChunk(blocks[c * per_chunk : (c + 1) * per_chunk]) for c in range(config.block_chunks)
            )
        else:
            self.blocks = nn.ModuleList(blocks)
        self.head_nm = AdaLNBeforeHead(C, C, config.norm_eps)
        self.head = nn.Linear(C, config.num_outputs)
        self.activation_checkpointing = False
        """Recompute each block's activations in the backward pass instead of storing them (a runtime
        setting, not part of the config: saved models are unchanged). Only when gradients are on."""
        if not self.pos_start.is_meta:  # shapes-only models (inspect, checkpoint loading) skip the init
            self.reset_parameters()

    # ----------------------------------------------------------------------------------------- setup
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise like Infinity/VAR: trunc-normal linears, tiny head and AdaLN gammas, scaled outputs."""
        C, D, depth = self.config.width, self.config.text_dim, self.config.depth
        std = math.sqrt(1 / C / 3)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                module.weight.fill_(1.0)
                module.bias.zero_()
        nn.init.trunc_normal_(self.cfg_uncond, std=1.2, a=-2.4, b=2.4, generator=generator)
        self.cfg_uncond.div_(math.sqrt(D))
        nn.init.trunc_normal_(self.pos_start, std=std, a=-2 * std, b=2 * std, generator=generator)
        self.head.weight.mul_(0.02)  # head starts near 50/50 on every bit
        self.head_nm.ada_lin[1].weight.mul_(0.5)  # type: ignore[operator]  # Sequential(SiLU, Linear)
        ada: Any = self.shared_ada_lin[1]
        ada.weight.mul_(0.5)
        ada.weight[: 2 * C].mul_(1e-2)  # the gammas: residual branches start small
        for block in self.block_list():
            block.ada_gss.normal_(generator=generator).div_(math.sqrt(C))
            block.ada_gss[:, :, :2].mul_(1e-2)
            block.sa.scale_mul_1H11.fill_(math.log(4.0))
            block.sa.proj.weight.div_(math.sqrt(2 * depth))
            block.ca.proj.weight.div_(math.sqrt(2 * depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * depth))

    def block_list(self) -> list[CrossAttnBlock]:
        """The blocks in order, whichever storage layout (``blocks`` or ``block_chunks``) is used."""
        if self.config.block_chunks > 1:
            return [block for chunk in self.block_chunks for block in chunk.module]  # type: ignore[union-attr]
        return list(self.blocks)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------ condition
    def encode_condition(
        self, text: TextCondition | None, batch_size: int | None = None, *, drop: Tensor | None = None
    ) -> Conditioning:
        """Pool and project the text for the blocks.

        Args:
            text: encoded captions (B, T, text_dim), or ``None`` for "no caption" (the first
                ``null_text_length`` learned unconditional tokens stand in for every sample).
            batch_size: B when ``text`` is ``None``.
            drop: (B,) bool; where True the caption is replaced by the unconditional tokens
                (classifier-free guidance: dropout in training, the unconditional branch in sampling).
        """
        if text is None:
            if batch_size is None:
                raise ValueError("batch_size is needed when there is no text")
            T = self.config.null_text_length
            tokens_BTD = self.cfg_uncond[:T].unsqueeze(0).expand(batch_size, -1, -1)
            mask_BT = torch.ones(batch_size, T, dtype=torch.bool, device=tokens_BTD.device)
        else:
            if text.tokens.shape[-1] != self.config.text_dim:
                raise ValueError(f"text features have width {text.tokens.shape[-1]}, expected {self.config.text_dim}")
            if text.tokens.shape[1] > self.config.text_max_length:
                raise ValueError(f"text has {text.tokens.shape[1]} tokens, at most {self.config.text_max_length}")
            if batch_size is not None and batch_size != text.batch_size:
                raise ValueError(f"batch_size {batch_size} does not match the text batch {text.batch_size}")
            tokens_BTD = text.tokens.to(self.cfg_uncond.dtype)
            mask_BT = text.mask
            if drop is not None:
                uncond_1TD = self.cfg_uncond[: tokens_BTD.shape[1]].unsqueeze(0)
                tokens_BTD = torch.where(drop.to(tokens_BTD.device)[:, None, None], uncond_1TD, tokens_BTD)
        normed_BTD = self.text_norm(tokens_BTD)
        cond_BD = self.text_proj_for_sos(normed_BTD, mask_BT)
        B, C = cond_BD.shape
        return Conditioning(
            pooled=cond_BD,
            adaln=self.shared_ada_lin(cond_BD).view(B, 1, 6, C),
            text=self.text_proj_for_ca(normed_BTD),
            text_mask=mask_BT,
        )

    # ---------------------------------------------------------------------------------------- pieces
    def check_schedule(self, schedule: Schedule) -> None:
        if not schedule or tuple(schedule[0]) != (1, 1):
            raise ValueError(f"a schedule must start with the 1x1 scale, got {schedule[:1]}")
        if len(schedule) > self.config.num_levels:
            raise ValueError(f"schedule has {len(schedule)} scales, the model supports {self.config.num_levels}")

    def rope_table(self, schedule: Schedule, *, device: torch.device | str | None = None) -> Tensor:
        """(2, L, head_dim / 2) RoPE cos/sin of every token of ``schedule``, built on ``device``.

        Built where it is used: a host-to-device copy inside the step would stall the host until
        the GPU queue drains (a ``.to(cuda)`` of a CPU tensor synchronises).
        """
        extent = rope_extent(schedule, self.config.rope_extent)
        positions = scale_positions(schedule, extent, device=device)
        return rope_table(positions, self.config.head_dim, self.config.rope_theta)

    def logits(self, x_BLC: Tensor, cond: Conditioning) -> Tensor:
        """Head: (B, L, C) hidden states -> (B, L, d, 2) float32 bit logits (codebook: (B, L, V))."""
        B, L, _ = x_BLC.shape
        logits = self.head(self.head_nm(x_BLC, cond.pooled)).float()
        return logits if self.config.codebook_size is not None else logits.view(B, L, self.config.token_dim, 2)

    def run_blocks(
        self,
        x_BLC: Tensor,
        cond: Conditioning,
        rope_2Lp: Tensor,
        mask: Tensor | None,
        cache: KVCache | None = None,
        control: Sequence[Tensor] | None = None,
    ) -> tuple[Tensor, KVCache]:
        """All blocks over the L new tokens; attention also sees ``cache``. Returns hidden states and
        the cache extended by the new tokens. ``control``: one (B, L, C) tensor per block, added to
        that block's input (ControlNet-style conditioning; see models/lq_conditioned.py)."""
        blocks = self.block_list()
        if control is not None and len(control) != len(blocks):
            raise ValueError(f"control has {len(control)} tensors for {len(blocks)} blocks")
        new_layers = []
        for index, block in enumerate(blocks):
            past = cache.layer(index) if cache is not None else None
            if control is not None:
                x_BLC = x_BLC + control[index].to(x_BLC.dtype)
            args = (x_BLC, cond.adaln, cond.text, cond.text_mask, rope_2Lp, mask, past)
            if self.activation_checkpointing and torch.is_grad_enabled() and past is None:
                # Non-reentrant: gradients reach parameters even when the block input needs none;
                # the RNG state (drop path) is replayed, so the recompute equals the forward.
                x_BLC, kv = torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
            else:
                x_BLC, kv = block(*args)
            new_layers.append(kv)
        return x_BLC, KVCache(tuple(new_layers))

    # --------------------------------------------------------------------------------------- forward
    def forward(
        self,
        inputs_BLd: Tensor,
        schedule: Schedule,
        text: TextCondition | Conditioning | None = None,
        *,
        mask: MaskMode = "causal",
        drop: Tensor | None = None,
        control: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Teacher-forced (or one-step) pass over every scale.

        Args:
            inputs_BLd: (B, L - 1, d) inputs of scales 2..K (``MultiScaleTokens.inputs``).
            schedule: the (h, w) grids, first one (1, 1).
            text: captions, a precomputed :class:`Conditioning`, or ``None`` (unconditional).
            mask: ``"causal"`` (block-causal by scale) or ``"full"`` (no mask).
            drop: (B,) bool caption dropout (see :meth:`encode_condition`).
            control: optional per-block (B, L, C) additions (see :meth:`run_blocks`).

        Returns:
            (B, L, d, 2) float32 logits; row l predicts the bits of token l ((B, L, V) for a codebook).
        """
        self.check_schedule(schedule)
        L = sum(h * w for h, w in schedule)
        B = inputs_BLd.shape[0]
        if inputs_BLd.ndim != 3 or inputs_BLd.shape[1:] != (L - 1, self.config.token_dim):
            raise ValueError(
                f"inputs must be (B, {L - 1}, {self.config.token_dim}) for this schedule, got {tuple(inputs_BLd.shape)}"
            )
        if mask not in ("causal", "full"):
            raise ValueError(f"mask must be 'causal' or 'full', got {mask!r}")
        cond = text if isinstance(text, Conditioning) else self.encode_condition(text, B, drop=drop)
        device = inputs_BLd.device
        sos_B1C = cond.pooled.unsqueeze(1) + self.pos_start
        x_BLC = torch.cat((sos_B1C, self.word_embed(inputs_BLd.to(sos_B1C.dtype))), dim=1)
        x_BLC = x_BLC + self.lvl_embed(scale_levels(schedule, device=device))
        attn_mask = block_causal_mask(schedule, device=device) if mask == "causal" else None
        x_BLC, _ = self.run_blocks(x_BLC, cond, self.rope_table(schedule, device=device), attn_mask, control=control)
        return self.logits(x_BLC, cond)

    def forward_scale(
        self,
        inputs_Bld: Tensor | None,
        schedule: Schedule,
        scale_index: int,
        cond: Conditioning,
        cache: KVCache | None,
        control: Sequence[Tensor] | None = None,
    ) -> tuple[Tensor, KVCache]:
        """Logits of one scale given the cache of all earlier scales (block-causal attention).

        Args:
            inputs_Bld: (B, h*w, d) inputs of scale ``scale_index``; ``None`` for scale 0 (start token).
            schedule: the full schedule (fixes RoPE positions).
            scale_index: k; the cache must hold exactly the tokens of scales < k.
            cond: from :meth:`encode_condition`.
            cache: ``None`` or empty for k = 0.
            control: optional per-block (B, h*w, C) additions for this scale's tokens.

        Returns:
            (B, h*w, d, 2) float32 logits ((B, h*w, V) for a codebook) and the cache extended by this scale.
        """
        self.check_schedule(schedule)
        offset = sum(h * w for h, w in schedule[:scale_index])
        h, w = schedule[scale_index]
        cached = cache.length if cache is not None else 0
        if cached != offset:
            raise ValueError(f"cache holds {cached} tokens, scale {scale_index} needs the {offset} before it")
        if scale_index == 0:
            x_BlC = cond.pooled.unsqueeze(1) + self.pos_start
        else:
            if inputs_Bld is None or inputs_Bld.shape[1:] != (h * w, self.config.token_dim):
                shape = None if inputs_Bld is None else tuple(inputs_Bld.shape)
                raise ValueError(f"scale {scale_index} needs inputs (B, {h * w}, {self.config.token_dim}), got {shape}")
            x_BlC = self.word_embed(inputs_Bld.to(cond.pooled.dtype))
        x_BlC = x_BlC + self.lvl_embed.weight[scale_index]
        rope_2lp = self.rope_table(schedule, device=x_BlC.device)[:, offset : offset + h * w]
        x_BlC, cache = self.run_blocks(x_BlC, cond, rope_2lp, None, cache, control)
        return self.logits(x_BlC, cond), cache


__all__ = ["TRANSFORMER_PRESETS", "Conditioning", "NextScaleTransformer", "TransformerConfig"]
