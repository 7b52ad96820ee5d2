"""The light pre-cleaner run on the LQ image before the restorer (the paper's role for SwinIR).

Design decision: the pre-cleaner keeps the LQ size, because the one-step restorer takes the LQ at
its own resolution. Two variants share one wrapper:

- a same-size network (the ``precleaner-1x`` preset of ``archs/srvgg.py``: SRVGGNetCompact, 32 features,
  8 convolutions, upscale 1), trained with ``varestorer train precleaner``; and
- a published x4 restorer (realesr-general-x4v3, loaded by path from ncnn or ``.pth``): it cleans
  and upsamples x4, and the result is resized back to the LQ size with antialiased bicubic, which
  keeps its denoising and deblurring while discarding the invented detail.

A student built with ``precleaner_resolution = "output"`` keeps the x4 output instead
(``PreCleaner(net, keep_input_size=False)``) and encodes it at the working size directly.

It has one slot: the ``precleaner`` of the model that runs it (``Student.precleaner``, trained with it,
or the one of a :class:`PreCleaned` around a model without its own); never both. A pre-cleaner given to a
model that has its own takes its place (:func:`with_precleaner`; e.g. Real-ESRGAN x4plus in the default's
chain instead of realesr-general-x4v3).
``varestorer.foreign.peers.load_precleaner`` reads one from peer weight files.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.restore_spec import Restorable, RestoreSpec, restore_spec_of


class PreCleaner(nn.Module):
    """``forward(lq_B3HW in [0, 1]) -> cleaned_B3HW`` in [0, 1], same size as the input (``keep_input_size``)
    or the network's own output size."""

    def __init__(self, net: nn.Module, *, keep_input_size: bool = True) -> None:
        super().__init__()
        self.net = net
        self.scale = int(getattr(net, "scale", 1))
        self.keep_input_size = keep_input_size

    def forward(self, lq_B3HW: torch.Tensor) -> torch.Tensor:
        height, width = lq_B3HW.shape[-2:]
        out = self.net(lq_B3HW)
        if self.keep_input_size and out.shape[-2:] != (height, width):
            out = F.interpolate(out, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        return out.clamp(0, 1)


class PreCleaned(Restorable, nn.Module):
    """A one-step restorer (``OneStepSR``) with a pre-cleaner in front: ``model(precleaner(lq))``.

    Its ``restore_spec`` is the inner model's, whole: the pre-cleaner keeps the LQ size, so nothing
    of the contract changes. ``encode_prompts`` is the inner model's when it reads prompts.
    """

    def __init__(self, model: nn.Module, precleaner: PreCleaner) -> None:
        super().__init__()
        self.model = model
        self.precleaner = precleaner
        self._spec = restore_spec_of(model)

    @property
    def restore_spec(self) -> RestoreSpec:
        return self._spec

    def encode_prompts(self, prompts: list[str]) -> Any:
        inner: Any = self.model  # reads prompts iff its spec says so (the Restorer checks)
        return inner.encode_prompts(prompts)

    def set_precision(self, dtype: torch.dtype) -> None:
        """The inner model's per-stage precision (its spec's ``sets_precision``); the pre-cleaner stays as is."""
        inner: Any = self.model
        inner.set_precision(dtype)

    def forward(self, lq_B3HW: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return self.model(self.precleaner(lq_B3HW), *args, **kwargs)


def with_precleaner(model: nn.Module, precleaner: PreCleaner) -> nn.Module:
    """``model`` with ``precleaner`` in front (a :class:`PreCleaned`), or, when the model carries its own
    pre-cleaner, a shallow copy with ``precleaner``'s network in that slot (at the slot's output size: the
    model's stages after it read what they were trained to read). The model itself is not changed; the copy
    shares its other parts. Running both would clean twice.

    Raises:
        ValueError: the model's own pre-cleaner upsamples by another factor than ``precleaner``.
    """
    own = getattr(model, "precleaner", None)
    if own is None:
        return PreCleaned(model, precleaner)
    if not isinstance(own, PreCleaner) or own.scale != precleaner.scale:
        factor = getattr(own, "scale", "?")
        raise ValueError(
            f"this {type(model).__name__}'s own pre-cleaner upsamples x{factor}: "
            f"a x{precleaner.scale} one cannot take its place"
        )
    swapped = copy.copy(model)  # own registries, shared tensors and other submodules
    swapped._parameters, swapped._buffers = dict(model._parameters), dict(model._buffers)
    swapped._modules = dict(model._modules)
    swapped._modules["precleaner"] = PreCleaner(precleaner.net, keep_input_size=own.keep_input_size).eval()
    return swapped
