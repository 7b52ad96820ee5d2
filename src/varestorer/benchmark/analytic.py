"""Closed-form FLOP count of one ``NextScaleTransformer`` pass (cross-check of the counted FLOPs).

FLOPs are 2 per multiply-add and cover what ``FlopCounterMode`` counts: matmuls and attention.
Attention over S keys costs 4 * S * C per query (QK^T and AV); a mask is not taken into account
(the kernels compute every block), so "full" and "causal" count the same.
"""

from __future__ import annotations

from varestorer.tokenizer.scales import Schedule, token_count
from varestorer.transformer.config import TransformerConfig


def _mm(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


def transformer_flops(
    config: TransformerConfig, schedule: Schedule, *, text_tokens: int | None = None, batch_size: int = 1
) -> int:
    """FLOPs of ``NextScaleTransformer.forward`` over every scale of ``schedule``.

    Args:
        text_tokens: caption length T; ``None``: no caption (``null_text_length`` learned tokens).

    For Infinity-2B at 512 px (2521 tokens) the linear layers alone are 28 * L * C^2 * depth
    = 9.47 TFLOP (our arithmetic, docs/sources.md: 4737 GMAC).
    """
    C, D, F, d = config.width, config.text_dim, config.ffn_dim, config.token_dim
    L = token_count(schedule)
    T = config.null_text_length if text_tokens is None else text_tokens
    condition = _mm(T, D, 2 * C) + 4 * T * C + _mm(1, C, C)  # attentive pooling: kv (to C), 1-query attention, proj
    condition += _mm(T, D, C) + _mm(T, C, C) + _mm(1, C, 6 * C)  # text projection for cross-attention, AdaLN
    block = _mm(L, C, 3 * C) + 4 * L * L * C + _mm(L, C, C)  # self-attention
    block += _mm(L, C, C) + _mm(T, C, 2 * C) + 4 * L * T * C + _mm(L, C, C)  # cross-attention
    block += _mm(L, C, F) + _mm(L, F, C)  # FFN
    head = _mm(1, C, 2 * C) + _mm(L, C, 2 * d)
    embed = _mm(L - 1, d, C)
    return batch_size * (condition + config.depth * block + head + embed)
