"""How a checkpoint stores its floating tensors: as they are, cast to a float dtype, or weight-only int8.

Weight-only int8 is symmetric int8 per output channel plus one float32 scale per channel. A checkpoint
saved with ``dtype="int8"`` stores each weight matrix / conv kernel ``W`` (dim 0 = output channels) as
``W`` in int8 and ``W.int8_scale`` in float32, shape ``(W.shape[0],)``:

    scale[c] = max |W[c]| / 127        q[c] = round(W[c] / scale[c]) in [-127, 127]       W ~ q * scale

so every element is within ``scale[c] / 2`` of its original. Every safetensors file of such a checkpoint
records the scheme in its metadata (``METADATA_KEY: SCHEME``). Only tensors where it pays are quantised
(:func:`is_quantizable`): floating, at least 2-D, at least ``MIN_ELEMENTS`` elements and more than one
row. The rest (biases, norms, gains, one-row modulation tables, and buffers, which the caller names in
``keep``) keep their own dtype: they are ~1% of the bytes, and they are added or multiplied in directly
rather than summed over in a dot product, so their rounding error would not average out. Buffers may
also hold values no int8 scale can represent (masks of -inf, position tables).

Reading is strict (:func:`dequantize_state_dict`): a scale without its tensor, of the wrong shape, or
not a finite non-negative float, and (in a checkpoint that declares the scheme) an int8 tensor without
its scale are one-line ``ValueError`` s naming the tensor.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

SCHEME = "int8-symmetric-per-channel"
"""The value of :data:`METADATA_KEY` in the safetensors metadata of an int8 checkpoint."""
METADATA_KEY = "varestorer.quantization"
SCALE_SUFFIX = ".int8_scale"
MIN_ELEMENTS = 1024
_QMAX = 127

StorageDtype = torch.dtype | str | None
"""How :func:`varestorer.checkpoint.save_pretrained` stores floating tensors: as they are (None), converted
to a float dtype (``torch.float16`` or ``"float16"``, ``"bfloat16"``, ``"float32"``), or ``"int8"`` (``torch.int8``)."""
_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def storage_dtype(dtype: StorageDtype) -> torch.dtype | str | None:
    """``dtype`` normalised: None, a float ``torch.dtype`` or ``"int8"``; anything else is a ``ValueError``."""
    if dtype is None or dtype == "int8" or dtype is torch.int8:
        return None if dtype is None else "int8"
    if isinstance(dtype, str) and dtype in _FLOAT_DTYPES:
        return _FLOAT_DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in _FLOAT_DTYPES.values():
        return dtype
    raise ValueError(f"storage dtype must be one of {', '.join(_FLOAT_DTYPES)} or int8, got {dtype!r}")


def stored_state(
    state_dict: Mapping[str, torch.Tensor], dtype: StorageDtype, *, keep_float: Collection[str] = ()
) -> dict[str, torch.Tensor]:
    """The tensors as :func:`varestorer.checkpoint.save_pretrained` writes them for ``dtype``; the names in
    ``keep_float`` (the model's buffers) are never quantised to int8 (they keep their dtype)."""
    dtype = storage_dtype(dtype)
    if dtype == "int8":
        return quantize_state_dict(state_dict, keep=keep_float)
    if dtype is None:
        return dict(state_dict)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def is_quantizable(tensor: torch.Tensor) -> bool:
    """Floating, >= 2-D, >= ``MIN_ELEMENTS`` elements and more than one output channel (dim 0)."""
    return (
        tensor.is_floating_point()
        and tensor.dim() >= 2
        and tensor.numel() >= MIN_ELEMENTS
        and tensor.shape[0] > 1
        and bool(torch.isfinite(tensor).all())
    )


def quantize(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: int8 ``q`` of ``tensor``'s shape and float32 ``scale`` of shape ``(tensor.shape[0],)``.

    Rounding happens in float64 against the float32 scale that is stored, so ``|W - q * scale| <= scale / 2``
    holds for the stored values (a zero row gets scale 0 and q 0).
    """
    rows = tensor.detach().reshape(tensor.shape[0], -1).double()
    scale = (rows.abs().amax(dim=1) / _QMAX).float()
    divisor = torch.where(scale > 0, scale.double(), torch.ones_like(scale, dtype=torch.float64))
    q = torch.round(rows / divisor[:, None]).clamp(-_QMAX, _QMAX).to(torch.int8)
    return q.reshape(tensor.shape).contiguous(), scale.contiguous()


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``q * scale`` per output channel, in ``dtype``."""
    return (q.to(torch.float32) * scale.to(torch.float32).reshape(-1, *([1] * (q.dim() - 1)))).to(dtype)


def quantize_state_dict(state_dict: Mapping[str, torch.Tensor], *, keep: Collection[str] = ()) -> dict[str, Any]:
    """Every :func:`is_quantizable` tensor not named in ``keep`` as int8, its scale right after it."""
    out: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        if name.endswith(SCALE_SUFFIX):
            raise ValueError(f"cannot store {name} as int8: its name ends in {SCALE_SUFFIX}, the scale suffix")
        if name in keep or not is_quantizable(tensor):
            out[name] = tensor
            continue
        out[name], out[name + SCALE_SUFFIX] = quantize(tensor)
    return out


def file_scheme(metadata: Mapping[str, str] | None, where: str | Path) -> str | None:
    """The storage scheme a safetensors file declares (``SCHEME``), or None; another value is refused."""
    value = (metadata or {}).get(METADATA_KEY)
    if value is not None and value != SCHEME:
        raise ValueError(f"{where}: weights stored as {value!r}, which this varestorer cannot read (it reads {SCHEME})")
    return value


def read_file_scheme(path: str | Path) -> str | None:
    """:func:`file_scheme` of a ``.safetensors`` file (its header only); None for other files."""
    if Path(path).suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return file_scheme(handle.metadata(), path)


def dequantize_state_dict(
    state_dict: Mapping[str, Any], *, declared: bool, where: str | Path, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Replace each int8 tensor and its ``.int8_scale`` by the float tensor (``dtype``); strict.

    ``declared``: the checkpoint declares :data:`SCHEME`, so every int8 tensor must have its scale
    (otherwise int8 tensors without a scale pass through, as a model's own int8 buffers would).
    """
    scales = {name[: -len(SCALE_SUFFIX)]: name for name in state_dict if name.endswith(SCALE_SUFFIX)}
    out: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if name not in scales:
            if declared and isinstance(tensor, torch.Tensor) and tensor.dtype == torch.int8:
                raise ValueError(
                    f"{where}: {name} is stored as int8 but its scale {name}{SCALE_SUFFIX} is missing "
                    "(a corrupt or truncated int8 checkpoint)"
                )
            out[name] = tensor
            continue
        scale = state_dict[scales[name]]
        _check_scale(name, tensor, scale, where)
        out[name] = dequantize(tensor, scale, dtype)
    orphans = sorted(base for base in scales if base not in state_dict)
    if orphans:
        raise ValueError(f"{where}: {orphans[0]}{SCALE_SUFFIX} is a scale without its tensor {orphans[0]}")
    return out


def _check_scale(name: str, tensor: Any, scale: Any, where: str | Path) -> None:
    label = f"{where}: {name}{SCALE_SUFFIX}"
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.int8 or tensor.dim() == 0:
        kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{label} scales {name}, which is {kind}, not an int8 tensor of at least one dimension")
    expected = (tensor.shape[0],)
    if not isinstance(scale, torch.Tensor) or tuple(scale.shape) != expected:
        shape = tuple(scale.shape) if isinstance(scale, torch.Tensor) else type(scale).__name__
        raise ValueError(
            f"{label} has shape {shape}, expected {expected}: one scale per output channel (dim 0) of "
            f"{name} {tuple(tensor.shape)}"
        )
    if not scale.is_floating_point() or not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
        raise ValueError(f"{label} is not a valid scale (expected finite non-negative floats, got {scale.dtype})")


def stored_dtypes(state_dict: Mapping[str, Any]) -> dict[str, str]:
    """Tensor name -> the dtype it is stored in (``int8`` for a quantised one), scales left out."""
    return {
        name: str(tensor.dtype).removeprefix("torch.")
        for name, tensor in state_dict.items()
        if isinstance(tensor, torch.Tensor) and not name.endswith(SCALE_SUFFIX)
    }
