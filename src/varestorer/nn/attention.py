"""One attention function for the whole package, and the explicit key/value cache value.

Every attention in ``varestorer`` goes through :func:`attention`, which calls
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels where the device has them).
A plain softmax implementation sits next to it as the reference the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Implementation = Literal["sdpa", "reference"]


def attention(
    q_BHLc: Tensor,
    k_BHSc: Tensor,
    v_BHSc: Tensor,
    mask: Tensor | None = None,
    *,
    scale: float | None = None,
    implementation: Implementation = "sdpa",
) -> Tensor:
    """Scaled dot-product attention.

    Args:
        q_BHLc: queries (B, H, L, c).
        k_BHSc: keys (B, H, S, c).
        v_BHSc: values (B, H, S, c).
        mask: boolean, ``True`` where a query may attend to a key; broadcastable to (B, H, L, S).
            ``None`` attends everywhere. Every query row must keep at least one key.
        scale: logit scale; ``None`` means 1/sqrt(c).
        implementation: ``"sdpa"`` (fused PyTorch kernel) or ``"reference"`` (explicit softmax).

    Returns:
        (B, H, L, c) attention output.
    """
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"attention mask must be boolean (True = attend), got {mask.dtype}")
    if implementation == "sdpa":
        return F.scaled_dot_product_attention(q_BHLc, k_BHSc, v_BHSc, attn_mask=mask, scale=scale)
    if implementation == "reference":
        scale = q_BHLc.shape[-1] ** -0.5 if scale is None else scale
        logits_BHLS = (q_BHLc.float() @ k_BHSc.float().transpose(-1, -2)) * scale
        if mask is not None:
            logits_BHLS = logits_BHLS.masked_fill(~mask, float("-inf"))
        return (logits_BHLS.softmax(dim=-1) @ v_BHSc.float()).to(q_BHLc.dtype)
    raise ValueError(f"unknown attention implementation {implementation!r}; use 'sdpa' or 'reference'")


@dataclass(frozen=True)
class KVCache:
    """Keys and values of every self-attention layer for the tokens seen so far.

    A value, not a flag on the modules: the sampler passes one in and gets a longer one back.
    ``layers[i]`` is ``(keys, values)`` of layer ``i``, each (B, H, S, c) with RoPE already applied
    to the keys; ``S`` (= :attr:`length`) is the same for every layer.
    """

    layers: tuple[tuple[Tensor, Tensor], ...] = ()

    @property
    def length(self) -> int:
        """Number of cached tokens (0 for an empty cache)."""
        return self.layers[0][0].shape[2] if self.layers else 0

    def layer(self, index: int) -> tuple[Tensor, Tensor] | None:
        """The cached ``(keys, values)`` of one layer, or ``None`` if the cache is empty."""
        return self.layers[index] if self.layers else None
