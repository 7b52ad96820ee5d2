"""Load official Infinity transformer weights (``infinity_2b_reg.pth`` or a training checkpoint).

The parameter names of :class:`NextScaleTransformer` are Infinity's own
(docs/sources.md), so loading is a strict key-for-key copy: only the derived buffers Infinity itself
recomputes are dropped, and every missing, unexpected or mis-shaped tensor is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from varestorer.checkpoint import check_state_dict, load_state_dict
from varestorer.transformer.config import TransformerConfig, transformer_preset
from varestorer.transformer.model import NextScaleTransformer

# Buffers Infinity registers but rebuilds from the schedule; its own loader drops them too.
DERIVED_BUFFERS = ("lvl_1L", "attn_bias_for_masking", "Infinity_visible_kvlen", "Infinity_invisible_qlen")


def infinity_state_dict(checkpoint: Mapping[str, Any], *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The transformer tensors of a bare state dict or of a training checkpoint.

    Training checkpoints keep them under ``['trainer']['gpt_fsdp']`` (``['gpt_ema_fsdp']`` with ``ema``).
    """
    state: Any = checkpoint
    if "trainer" in state and isinstance(state["trainer"], Mapping):
        key = "gpt_ema_fsdp" if ema else "gpt_fsdp"
        if key not in state["trainer"]:
            raise ValueError(f"training checkpoint has no ['trainer'][{key!r}]")
        state = state["trainer"][key]
    elif ema:
        raise ValueError("ema=True needs a training checkpoint with ['trainer']['gpt_ema_fsdp']")
    out = {}
    for name, value in state.items():
        name = name.removeprefix("module.")  # DDP-wrapped saves
        if name in DERIVED_BUFFERS:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint entry {name!r} is a {type(value).__name__}, not a tensor")
        out[name] = value
    return out


def load_infinity_transformer(
    path: str | Path,
    config: TransformerConfig | str = "infinity-2b",
    *,
    ema: bool = False,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> NextScaleTransformer:
    """Build a :class:`NextScaleTransformer` from an official Infinity ``.pth``.

    The model is built on the meta device and the checkpoint tensors are assigned to it, so the
    weights are held in memory once.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, or missing / unexpected / mis-shaped tensors (all listed).
    """
    config = transformer_preset(config) if isinstance(config, str) else config
    state = infinity_state_dict(load_state_dict(path), ema=ema)
    with torch.device("meta"):
        model = NextScaleTransformer(config)
    check_state_dict(model, state, what=str(path))
    state = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
