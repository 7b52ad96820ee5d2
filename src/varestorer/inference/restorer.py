"""The ``Restorer``: any one-step SR model behind one contract, at any size, from Python.

Models plug in through the ``OneStepSR`` protocol (the student, our peer archs, anything else).
The restorer owns everything around the model: input conversion (PIL / numpy / tensors; gray,
RGBA, 8/16-bit), device and dtype, padding, overlapping tiles with feathered blending, the
optional pre-cleaner and colour fix, and the exact output size for any float scale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from varestorer.families import resolve
from varestorer.inference.color import ColorFix, apply_color_fix
from varestorer.inference.devices import check_device
from varestorer.inference.tiling import BlendWindow, tiled_apply
from varestorer.io.images import pil_to_array
from varestorer.models.precleaner import PreCleaner, with_precleaner
from varestorer.restore_spec import restore_spec_of

logger = logging.getLogger(__name__)


@runtime_checkable
class OneStepSR(Protocol):
    """What a third-party model must offer to run inside a ``Restorer``.

    The package's own models declare their whole contract as a ``restore_spec``
    (:class:`~varestorer.restore_spec.RestoreSpec`: these three attributes plus the default dtype,
    tile overlap, colour fix, edge context and whether prompts are read). A model without one gets
    the spec of these three attributes, once, in :func:`~varestorer.restore_spec.restore_spec_of`.

    Attributes:
        scale: native upscaling factor (an int >= 1).
        input_size: the LQ tile size in pixels the model works at (inputs are exactly
            ``(B, 3, input_size, input_size)``), or None if it accepts any size.
        size_multiple: input height and width must be multiples of this (after padding).

    ``model(lq_B3HW)`` takes float RGB in [0, 1] and returns ``(B, 3, scale*H, scale*W)`` in
    [0, 1] (values slightly outside are clamped). A model that reads text also defines
    ``encode_prompts(prompts: list[str]) -> condition`` (one prompt per batch item); the restorer
    encodes the prompt once per tile-batch size and runs ``model(lq, condition)``.
    """

    scale: int
    input_size: int | None
    size_multiple: int

    def __call__(self, lq_B3HW: torch.Tensor) -> torch.Tensor: ...


DEFAULT_TILE = 512  # LQ pixels per tile for models that accept any size
DEFAULT_OVERLAP = 32


def default_device() -> torch.device:
    """CUDA if available, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA; float32 on MPS and CPU (opt into float16 on MPS with ``dtype=``)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class Restorer:
    """Restore images with a one-step SR model.

    Args:
        model: an ``OneStepSR`` module.
        device, dtype: where and how the model runs; default the spec's ``default_dtype`` if it sets
            one (the official 2B release: bfloat16), else CUDA bf16, MPS or CPU float32. A model whose
            spec sets ``sets_precision`` applies the dtype per stage itself (``model.set_precision``) and
            gets float32 LQ; every other model is cast to the dtype whole.
        tile: LQ tile size in pixels; default the model's ``input_size``, else 512. Inputs larger
            than a tile are split into overlapping tiles whose outputs are blended with feathered
            weights (no seams); at most ``batch_size`` tiles run at once.
        tile_overlap: minimum overlap of neighbouring tiles in LQ pixels (default: the spec's
            ``default_tile_overlap`` if it sets one, else tile/4 for fixed-size models, else 32).
        color_fix: "none", "adain" or "wavelet", applied per tile against the LQ tile; ``None`` takes the
            model's own recommendation (the spec's ``default_color_fix``).
        color_fix_levels: a-trous levels of the wavelet fix; ``None`` takes the spec's ``color_fix_levels``.
        precleaner: an optional ``PreCleaner`` run on each LQ tile first; it goes into the model's one
            pre-cleaner slot (``models/precleaner.py: with_precleaner``), so it can never run twice: in front of
            a model without one, in place of the model's own otherwise (same upsampling factor).
        captioner: optional ``(B,3,H,W) -> list[str]`` (e.g. :class:`varestorer.models.captioner.Captioner`)
            for prompt-reading models: without a prompt, each whole LQ image is captioned and the
            caption is its prompt (the official evaluation mode). Off by default.
        window: blending weights, "gaussian" or "linear".
        edge_context: LQ pixels of mirrored image added on every side before the model runs and
            cropped after, so the output's border is computed from image-like context instead of
            the model's zero padding (default: the spec's ``edge_context``, 4 unless the model says; 0 off).
        compile: ``torch.compile`` the model in place (its first tile batch of each shape compiles;
            worth it for many tiles on a GPU).

    Everything the restorer knows about the model comes from its ``restore_spec``
    (:func:`~varestorer.restore_spec.restore_spec_of`), kept as ``self.spec`` (the pre-cleaner's wrapper
    has the inner model's).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        tile: int | None = None,
        tile_overlap: int | None = None,
        batch_size: int = 1,
        color_fix: ColorFix | None = None,
        color_fix_levels: int | None = None,
        precleaner: PreCleaner | None = None,
        window: BlendWindow = "gaussian",
        captioner: Callable[[torch.Tensor], list[str]] | None = None,
        edge_context: int | None = None,
        compile: bool = False,
    ) -> None:
        spec = restore_spec_of(model)
        self.device = check_device(device) if device is not None else default_device()
        if isinstance(dtype, str) and dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
        chosen = _torch_dtype(dtype) if isinstance(dtype, str) else dtype
        self.dtype: torch.dtype = chosen or _torch_dtype(spec.default_dtype) or default_dtype(self.device)
        if precleaner is not None:
            model = with_precleaner(model, precleaner)
        if spec.sets_precision:  # its own dtype per stage (the official release), from the run dtype
            self.model = model.to(self.device).eval()
            self.model.set_precision(self.dtype)  # type: ignore[operator]
        else:
            self.model = model.to(self.device, self.dtype).eval()
        if compile:
            self.model.compile()  # in place: state-dict names and attributes unchanged
        self.spec = spec
        self.scale, self.input_size, self.size_multiple = spec.scale, spec.input_size, spec.size_multiple
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if tile_overlap is None:
            tile_overlap = spec.default_tile_overlap
        self.tile, self.tile_overlap, self.batch_size = tile, tile_overlap, batch_size
        self.color_fix: ColorFix = spec.default_color_fix if color_fix is None else color_fix
        self.color_fix_levels = spec.color_fix_levels if color_fix_levels is None else color_fix_levels
        self.window = window
        if captioner is not None and not spec.reads_prompts:
            raise ValueError(f"{type(model).__name__} takes no text prompt, so a captioner has no use")
        self.captioner = captioner
        if edge_context is None:
            edge_context = spec.edge_context
        if edge_context < 0:
            raise ValueError(f"edge context must be >= 0, got {edge_context}")
        self.edge_context = edge_context
        zero = torch.zeros(1, 3, 2, 2)
        apply_color_fix(zero, zero, self.color_fix, levels=self.color_fix_levels)  # validates the name and levels

    @classmethod
    def from_pretrained(cls, path_or_name: str | Path = "default", **kwargs: Any) -> Restorer:
        """Load a checkpoint folder (dispatch on config.json ``model_type``: a restorable family of
        ``varestorer.families``; or a folder of the official release's files), a peer
        ``.pth``/``.safetensors``/ncnn file, a Hugging Face Hub id ``owner/name`` (needs the ``hub``
        extra; ``EvanEternal/VARestorer`` is the official release), or an embedded model name (default:
        the embedded default model, shipped in the package), all through the one door
        :func:`varestorer.families.resolve`; kwargs go to ``__init__``."""
        return cls(resolve(path_or_name, require="restorable", what="a restorable model"), **kwargs)

    def _tiling(self, tile: int | None, overlap: int | None) -> tuple[int, int]:
        tile = self.tile if tile is None else tile
        overlap = self.tile_overlap if overlap is None else overlap
        if self.input_size is not None:
            size = self.input_size if tile is None else min(tile, self.input_size)
            overlap = size // 4 if overlap is None else overlap
        else:
            size = tile or DEFAULT_TILE
            overlap = min(DEFAULT_OVERLAP, size // 4) if overlap is None else overlap
        if size < 1 or not 0 <= overlap < size:
            raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={size}, overlap={overlap}")
        return size, overlap

    @torch.no_grad()
    def restore_tensor(
        self,
        lq_B3HW: torch.Tensor,
        scale: float | None = None,
        *,
        tile: int | None = None,
        tile_overlap: int | None = None,
        color_fix: ColorFix | None = None,
        prompt: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Core path: float RGB ``(B, 3, H, W)`` in [0, 1] on any device -> ``(B, 3, H', W')`` float32
        in [0, 1] on the CPU, with ``H' = round(scale * H)`` (default scale: the model's native one).

        ``progress(done_tiles, total_tiles)`` is called with ``(0, total)`` before the first tile batch
        and after every tile batch (for a progress bar or an ETA on large images)."""
        if lq_B3HW.ndim != 4 or lq_B3HW.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(lq_B3HW.shape)}")
        height, width = lq_B3HW.shape[-2:]
        target = _target_size(height, width, self.scale if scale is None else scale)
        fix = self.color_fix if color_fix is None else color_fix
        if prompt is None and self.captioner is not None:
            if lq_B3HW.shape[0] > 1:  # one caption (prompt) per image
                return torch.cat(
                    [
                        self.restore_tensor(x[None], scale, tile=tile, tile_overlap=tile_overlap, color_fix=color_fix)
                        for x in lq_B3HW
                    ]
                )
            prompt = self.captioner(lq_B3HW)[0]
            logger.info("caption: %s", prompt)
        if prompt is not None and not self.spec.reads_prompts:
            raise ValueError(f"{type(self.model).__name__} takes no text prompt")
        conditions: dict[int, Any] = {}  # tile-batch size -> encoded prompt
        size, overlap = self._tiling(tile, tile_overlap)

        spec = self.spec
        input_dtype = torch.float32 if spec.sets_precision else self.dtype

        def run(tiles: torch.Tensor, indices: list[int] | None = None) -> torch.Tensor:
            lq = tiles.to(self.device, input_dtype)
            extra: dict[str, Any] = {} if indices is None else {"streams": indices}
            if prompt is None:
                sr = self.model(lq, **extra)
            else:
                if lq.shape[0] not in conditions:
                    conditions[lq.shape[0]] = self.model.encode_prompts([prompt] * lq.shape[0])  # type: ignore[operator]
                sr = self.model(lq, conditions[lq.shape[0]], **extra)
            sr = apply_color_fix(sr.float(), lq.float(), fix, levels=self.color_fix_levels)
            return sr.clamp_(0, 1).to("cpu", torch.float32)

        lq = lq_B3HW.detach().to("cpu", torch.float32)
        context = self.edge_context
        if context:
            mode = "reflect" if context < min(height, width) else "replicate"
            lq = F.pad(lq, (context,) * 4, mode=mode)
        sr = tiled_apply(
            run,
            lq,
            scale=self.scale,
            tile=size,
            overlap=overlap,
            batch_size=self.batch_size,
            window=self.window,
            size_multiple=self.size_multiple,
            min_size=self.input_size or 0,
            progress=progress,
            tile_index=spec.tile_streams,
        )
        if context:
            margin = context * self.scale
            sr = sr[..., margin : sr.shape[-2] - margin, margin : sr.shape[-1] - margin]
        if sr.shape[-2:] != target:
            sr = F.interpolate(sr, size=target, mode="bicubic", antialias=True, align_corners=False)
        return sr.clamp_(0, 1)

    def __call__(self, image: Any, scale: float | None = None, **kwargs: Any) -> Any:
        """Restore ``image`` and return it in the same kind it came in.

        Args:
            image: a PIL image (any mode; palette/CMYK become RGB(A)); a numpy array ``(H, W)`` or
                ``(H, W, C)``, C in {1, 3, 4}, ``uint8``, ``uint16`` or float in [0, 1]; or a float
                tensor ``(B, C, H, W)`` in [0, 1], C in {1, 3, 4}.
            scale: output/input size ratio, any positive float (default: the model's native
                factor). The model always runs at its native factor; the result is resized
                (antialiased bicubic) to exactly ``round(scale * H) x round(scale * W)``.
            kwargs: ``tile``, ``tile_overlap``, ``color_fix``, ``prompt`` override the defaults;
                ``progress=fn`` is called as ``fn(done_tiles, total_tiles)`` (see ``restore_tensor``).

        Returns:
            The same type: PIL in the input's mode family (L, RGB, RGBA, I;16), numpy with the
            input's dtype and channel layout, or a float32 tensor on the input's device. Gray is
            restored as RGB and averaged back; alpha is resized with bicubic, not by the model.
            Inputs are padded to the model's ``size_multiple`` (reflect) and cropped back.

        Raises:
            ValueError: wrong shape, dtype, range, scale, or a prompt for a model without text.
        """
        if isinstance(image, Image.Image):
            array = pil_to_array(image)
            out = self._restore_array(array, scale, **kwargs)
            return _array_to_pil(out)
        if isinstance(image, np.ndarray):
            squeeze = image.ndim == 2
            out = self._restore_array(image[..., None] if squeeze else image, scale, **kwargs)
            return out[..., 0] if squeeze else out
        if isinstance(image, torch.Tensor):
            if image.ndim != 4 or image.shape[1] not in (1, 3, 4) or not image.is_floating_point():
                raise ValueError(
                    f"expected a float (B, C, H, W) tensor with C in 1, 3, 4; got {image.dtype} {tuple(image.shape)}"
                )
            _check_range(image)
            return self._restore_channels(image.float(), scale, **kwargs).to(image.device)
        raise TypeError(f"expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")

    def _restore_channels(self, x_BCHW: torch.Tensor, scale: float | None, **kwargs: Any) -> torch.Tensor:
        channels = x_BCHW.shape[1]
        rgb = x_BCHW[:, :3] if channels >= 3 else x_BCHW.expand(-1, 3, -1, -1)
        sr = self.restore_tensor(rgb, scale, **kwargs)
        if channels == 1:
            return sr.mean(dim=1, keepdim=True)
        if channels == 4:
            alpha = F.interpolate(x_BCHW[:, 3:].cpu(), size=sr.shape[-2:], mode="bicubic", antialias=True)
            return torch.cat([sr, alpha.clamp_(0, 1)], dim=1)
        return sr

    def _restore_array(self, array: np.ndarray, scale: float | None, **kwargs: Any) -> np.ndarray:
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an (H, W) or (H, W, C) array with C in 1, 3, 4; got {array.shape}")
        if array.dtype == np.uint8:
            peak = 255.0
        elif array.dtype == np.uint16:
            peak = 65535.0
        elif np.issubdtype(array.dtype, np.floating):
            peak = 1.0
        else:
            raise ValueError(f"expected uint8, uint16 or float pixels, got {array.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None] / peak
        if peak == 1.0:
            _check_range(x)
        sr = self._restore_channels(x, scale, **kwargs)[0]  # (C, H', W') float32 in [0, 1]
        del x
        if peak == 1.0:
            return sr.permute(1, 2, 0).numpy().astype(np.float32)
        # In place, then one integer copy: a 8000x8000 result never holds two float copies.
        sr.mul_(peak).add_(0.5).clamp_(0, peak)
        quantised = sr.to(torch.uint8 if peak == 255.0 else torch.int32)
        del sr
        return np.ascontiguousarray(quantised.permute(1, 2, 0).numpy().astype(array.dtype, copy=False))


def _torch_dtype(name: str | None) -> torch.dtype | None:
    return None if name is None else getattr(torch, name)


def _check_range(x: torch.Tensor) -> None:
    low, high = float(x.min()), float(x.max())
    if low < -1e-3 or high > 1 + 1e-3 or math.isnan(low) or math.isnan(high):
        raise ValueError(f"expected values in [0, 1], got [{low:.3g}, {high:.3g}]")


def _target_size(height: int, width: int, scale: float) -> tuple[int, int]:
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    target = (round(scale * height), round(scale * width))
    if min(target) < 1:
        raise ValueError(f"scale {scale} shrinks a {height}x{width} image to nothing")
    return target


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.dtype == np.uint16:
        if array.shape[2] == 1:
            return Image.fromarray(array[..., 0])  # mode I;16
        array = ((array.astype(np.float32) / 257.0) + 0.5).astype(np.uint8)  # PIL has no 16-bit RGB
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
