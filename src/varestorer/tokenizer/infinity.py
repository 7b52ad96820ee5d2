"""Load Infinity's official BSQ-VAE weights (``infinity_vae_d32reg.pth`` etc.) strictly.

Facts (Infinity `bsq_vae/vae.py`, docs/sources.md): the ``.pth`` holds the state dict under ``"vae"`` (``"ema"`` for
the EMA copy) and is read with ``weights_only=True``. Convs and norms may be named plainly
(``encoder.conv_in.weight``, ``norm1.weight``) or through Infinity's wrappers (``encoder.conv_in.conv.weight``,
``norm1.norm.weight``); both are normalised to this package's (wrapped) names before a strict load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from varestorer.checkpoint import check_state_dict, load_state_dict
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import TokenizerConfig, tokenizer_preset
from varestorer.tokenizer.quantizer import infinity_bit_mask

# Plain module names that Infinity wraps: conv layers get ``.conv``, GroupNorms ``.norm``.
_PLAIN_CONV = re.compile(
    r"(^|\.)(conv_in|conv_out|conv1|conv2|nin_shortcut|downsample\.conv|upsample\.conv)\.(weight|bias)$"
)
_PLAIN_NORM = re.compile(r"(^|\.)(norm1|norm2|norm_out)\.(weight|bias)$")
_MASK_KEYS = ("quantizer.lfq.mask", "quantize.lfq.mask")


def normalize_infinity_key(key: str) -> str:
    """A plain Infinity name -> the wrapped name (``a.conv1.weight`` -> ``a.conv1.conv.weight``); others unchanged."""
    key = _PLAIN_CONV.sub(r"\1\2.conv.\3", key)
    return _PLAIN_NORM.sub(r"\1\2.norm.\3", key)


def infinity_vae_state_dict(checkpoint: Mapping[str, Any], *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The VAE tensors of a loaded Infinity checkpoint, with normalised names.

    Takes ``checkpoint["vae"]`` (``["ema"]`` when ``ema``), or ``checkpoint`` itself when its keys already
    look like a bare state dict (``encoder.*`` / ``decoder.*``). An optional ``module.`` prefix (DDP) is dropped.

    Raises:
        ValueError: no VAE state dict in ``checkpoint``.
    """
    section = "ema" if ema else "vae"
    if any(k.startswith(("encoder.", "decoder.", "module.encoder.")) for k in checkpoint):
        if ema:
            raise ValueError("checkpoint is a bare state dict; it has no 'ema' section")
        state = checkpoint
    elif isinstance(checkpoint.get(section), Mapping):
        state = checkpoint[section]
    else:
        keys = ", ".join(sorted(map(str, checkpoint))[:8])
        raise ValueError(f"no '{section}' state dict in the checkpoint (top-level keys: {keys or 'none'})")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        name = normalize_infinity_key(key.removeprefix("module."))
        if name in out:
            raise ValueError(f"checkpoint has {key!r} under both naming schemes")
        out[name] = value.float() if value.is_floating_point() else value  # float32 by default, like a new model
    return out


def load_infinity_tokenizer(
    path: str | Path,
    preset: str | TokenizerConfig = "infinity-d32",
    *,
    ema: bool = False,
    device: str | torch.device = "cpu",
) -> MultiScaleTokenizer:
    """An official Infinity tokenizer checkpoint as a :class:`MultiScaleTokenizer` (``eval()`` mode).

    ``preset`` names the shape (``infinity-d16/d24/d32/d64``; ``infinity_vae_d32reg.pth`` is d32) or is a
    ``TokenizerConfig`` (with ``infinity_buffers=True`` for official files). The
    quantizer's ``lfq.mask`` buffers are constants: one missing from the file is filled in.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, no VAE inside, or missing/unexpected/mis-shaped tensors (all listed).
    """
    config = tokenizer_preset(preset) if isinstance(preset, str) else preset
    raw = load_state_dict(path)
    state = infinity_vae_state_dict(raw, ema=ema)
    with torch.device("meta"):
        model = MultiScaleTokenizer(config)
    expected = model.state_dict()
    for key in _MASK_KEYS:
        if key in expected and key not in state:
            state[key] = infinity_bit_mask(config.token_dim)
    conv_out = state.get("encoder.conv_out.conv.weight")
    if conv_out is not None and conv_out.ndim == 4 and conv_out.shape[0] != config.token_dim:
        raise ValueError(
            f"{path} holds a d={conv_out.shape[0]} tokenizer, not d={config.token_dim}; "
            f"try preset 'infinity-d{conv_out.shape[0]}'"
        )
    name = preset if isinstance(preset, str) else "the given config"
    what = f"{path} (as {name})"
    check_state_dict(model, state, what=what)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()
