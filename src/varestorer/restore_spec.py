"""The restore contract: what a restorable model declares about itself, in one frozen object.

Every model that runs inside a :class:`~varestorer.inference.restorer.Restorer` returns a
:class:`RestoreSpec` from its ``restore_spec`` property (the idea of spandrel's
``ImageModelDescriptor``: scale, size requirements, dtype and purpose in one object). The
``Restorer`` reads only the spec. A wrapper derives its spec from the inner model's with
``dataclasses.replace``, so a field added here reaches every wrapper without a line of forwarding.

Plain data, no torch: models (layer 6) and the inference layer (8) both import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_EDGE_CONTEXT = 4
"""LQ pixels of mirrored context around the whole image: convolutions zero-pad at their input's
border, which left a 1-3 px frame (12-27 levels off bicubic against ~3 inside for the embedded
model with its wavelet colour fix); with 4 px of reflection the frame is within ~2 levels of the interior."""

DTYPES = ("float32", "float16", "bfloat16")
COLOR_FIXES = ("none", "adain", "wavelet")
WAVELET_LEVELS = 5
"""StableSR's (and the official VARestorer's) number of a-trous levels in the wavelet fix: the restored image keeps
the frequencies above about 2**levels output px. A model may ship another (``color_fix_levels``)."""
Purpose = Literal["super-resolution", "restoration", "reconstruction"]


@dataclass(frozen=True)
class RestoreSpec:
    """How a one-step model runs: ``model(lq_B3HW)`` in [0, 1] -> ``(B, 3, scale*H, scale*W)`` in [0, 1]."""

    scale: int
    """Native upscaling factor (>= 1)."""
    input_size: int | None = None
    """The LQ tile side the model works at (inputs are exactly ``input_size`` square), or None for any size."""
    size_multiple: int = 1
    """Input height and width must be multiples of this (the ``Restorer`` pads and crops back)."""
    default_dtype: Literal["float32", "float16", "bfloat16"] | None = None
    """The dtype the ``Restorer`` runs it in unless told otherwise; None: the device's default."""
    default_tile_overlap: int | None = None
    """Minimum overlap of neighbouring tiles in LQ px; None: a quarter of a fixed tile, else 32."""
    default_color_fix: Literal["none", "adain", "wavelet"] = "none"
    """The colour fix the ``Restorer`` applies per tile unless told otherwise."""
    color_fix_levels: int = WAVELET_LEVELS
    """A-trous levels of the wavelet fix (StableSR's unless the model ships another)."""
    edge_context: int = DEFAULT_EDGE_CONTEXT
    """LQ px of mirrored image added around the whole input and cropped after (0: none)."""
    reads_prompts: bool = False
    """``encode_prompts(list[str])`` gives a condition that ``model(lq, condition)`` reads."""
    purpose: Purpose = "super-resolution"
    """What the output is: a larger image, a cleaned same-size one, or a tokenizer's round trip."""
    sets_precision: bool = False
    """The model keeps a precision per stage: the ``Restorer`` moves it to the device, calls
    ``model.set_precision(dtype)`` and feeds it float32 LQ, instead of casting every weight and the LQ
    to the run dtype (the official release: tokenizer encoder in float32, the rest under autocast)."""
    tile_streams: bool = False
    """``model(lq, ..., streams=[...])`` takes each tile's index in its image, one int per batch item, so
    its seeded sampling draws one stream per tile position: the same for every batch size, and
    different for two tiles of one image (no noise pattern repeated at the tile stride)."""

    def __post_init__(self) -> None:
        if self.scale < 1 or self.size_multiple < 1 or (self.input_size is not None and self.input_size < 1):
            raise ValueError(
                f"a restore spec needs scale, size_multiple and input_size >= 1, got {self.scale}, "
                f"{self.size_multiple}, {self.input_size}"
            )
        if self.default_dtype is not None and self.default_dtype not in DTYPES:
            raise ValueError(f"default_dtype must be one of {', '.join(DTYPES)} or None, got {self.default_dtype!r}")
        if self.default_color_fix not in COLOR_FIXES:
            raise ValueError(
                f"default_color_fix must be one of {', '.join(COLOR_FIXES)}, got {self.default_color_fix!r}"
            )
        if self.color_fix_levels < 1:
            raise ValueError(f"color_fix_levels must be >= 1, got {self.color_fix_levels}")
        if self.edge_context < 0 or (self.default_tile_overlap is not None and self.default_tile_overlap < 0):
            raise ValueError(
                f"edge_context and default_tile_overlap must be >= 0, got {self.edge_context}, "
                f"{self.default_tile_overlap}"
            )


class Restorable:
    """Mixin for models with a ``restore_spec``: the ``OneStepSR`` attributes (``scale``, ``input_size``,
    ``size_multiple``) read from it, so they are written once."""

    @property
    def restore_spec(self) -> RestoreSpec:
        """The model's contract; every restorable model defines it (from its config, or its inner model's)."""
        raise NotImplementedError

    @property
    def scale(self) -> int:
        """``restore_spec.scale``."""
        return self.restore_spec.scale

    @property
    def input_size(self) -> int | None:
        """``restore_spec.input_size``."""
        return self.restore_spec.input_size

    @property
    def size_multiple(self) -> int:
        """``restore_spec.size_multiple``."""
        return self.restore_spec.size_multiple


def restore_spec_of(model: Any) -> RestoreSpec:
    """The spec a model declares; for a third-party ``OneStepSR`` model without one, the spec of its three
    protocol attributes (the one place a spec is derived from attributes), reading prompts iff it
    defines ``encode_prompts``.

    Raises:
        TypeError: the model has neither a ``restore_spec`` nor the ``OneStepSR`` attributes.
    """
    spec = getattr(model, "restore_spec", None)
    if isinstance(spec, RestoreSpec):
        return spec
    for name in ("scale", "input_size", "size_multiple"):
        if not hasattr(model, name):
            raise TypeError(f"{type(model).__name__} lacks '{name}': it does not implement OneStepSR")
    return RestoreSpec(
        scale=int(model.scale),
        input_size=None if model.input_size is None else int(model.input_size),
        size_multiple=int(model.size_multiple),
        reads_prompts=callable(getattr(model, "encode_prompts", None)),
    )


__all__ = ["DEFAULT_EDGE_CONTEXT", "Restorable", "RestoreSpec", "restore_spec_of"]
