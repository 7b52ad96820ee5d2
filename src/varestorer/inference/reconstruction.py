"""Tokenizer round trips: image -> encode -> quantize over a scale schedule -> decode, at any size.

How good is a tokenizer? Round-trip clean images through it and score the results against the
originals. :func:`find_tokenizer` finds the tokenizer of a tokenizer, teacher or student folder (or an
embedded model), :func:`parse_scales` reads the schedule a user asks for, and :class:`RoundTrip` is the
round trip as a ``scale = 1`` ``OneStepSR`` model, so a :class:`~varestorer.inference.restorer.Restorer`
runs it exactly like ``restore`` runs a restorer: any image mode and bit depth, padding to the
tokenizer's stride and cropping back, overlapping tiles with feathered blending above the tile size.

The coarse scales of the quantizer summarise the whole tile (the first is one token), so a tiled
round trip is not the untiled one. Both agree (up to the receptive field at tile borders) only when
every scale is local (``--scales none``, or only the finest grid) and the tokenizer has no
normalisation over the image: the GroupNorm layers of ``MultiScaleTokenizer`` (and of Infinity's)
take their statistics per tile; a convolution-only autoencoder has none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from varestorer.checkpoint import read_config
from varestorer.families import FAMILIES, Family, embedded_folder, embedded_names, families
from varestorer.inference.restorer import Restorer
from varestorer.models.teacher import Teacher
from varestorer.restore_spec import Restorable, RestoreSpec
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.tokenizer.quantizer import MultiScaleTokens
from varestorer.tokenizer.scales import Schedule
from varestorer.tokenizer.statistics import ScaleStatistics, TokenStatistics

DEFAULT_TOKENIZER = "default-tokenizer"
"""The embedded tokenizer used when none is named (if the package ships it; else the default model's)."""


def default_tokenizer_source() -> str:
    """``default-tokenizer`` when the package ships it, else ``default`` (the default model's tokenizer)."""
    return DEFAULT_TOKENIZER if DEFAULT_TOKENIZER in embedded_names() else "default"


class LoadedTokenizer(NamedTuple):
    tokenizer: Any
    """In ``eval()`` mode on the requested device."""
    where: str
    """One line: which folder's tokenizer this is."""
    caveat: str | None
    """Why the round trip may not measure a tokenizer, or None."""


MERGED_STUDENT_CAVEAT = (
    "a merged student's encoder and decoder were fine-tuned apart by distillation (the encoder for LQ inputs, "
    "the decoder for predicted tokens), so their round trip is not a tokenizer's quality; pass a tokenizer or "
    "teacher folder"
)


def find_tokenizer(path_or_name: str | Path, *, device: str | torch.device = "cpu") -> LoadedTokenizer:
    """The tokenizer any model folder or embedded name holds, and where it came from.

    Accepted: a tokenizer folder (an ``is_tokenizer`` family of ``varestorer.families``); a teacher
    folder (its ``tokenizer/``); an adapter student (its teacher's ``tokenizer/``); a merged student
    such as the embedded ``default``, which names no teacher: its own encoder, quantizer and decoder
    (with ``MERGED_STUDENT_CAVEAT``); an embedded name (``default-tokenizer``, ``default``).

    Raises:
        FileNotFoundError: nothing at that path and no such embedded name.
        ValueError: a file, or a folder holding a model without a tokenizer.
    """
    folder = embedded_folder(path_or_name) or Path(path_or_name)
    if not folder.exists():
        names = ", ".join(embedded_names()) or "none bundled"
        raise FileNotFoundError(f"no tokenizer at {path_or_name} (embedded names: {names})")
    return _from_folder(folder, device)


def _from_folder(folder: Path, device: str | torch.device) -> LoadedTokenizer:
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; expected a tokenizer, teacher or student folder (config.json + weights)")
    meta = read_config(folder)
    kind = meta["model_type"]
    entry = FAMILIES.get(kind)
    if entry is not None and entry.is_tokenizer:
        return LoadedTokenizer(load_tokenizer(folder, device=device), f"{kind} from {folder}", None)
    if entry is not None and entry.trains == "teacher":
        tokenizer = Teacher.tokenizer_of(folder, device=device)
        return LoadedTokenizer(tokenizer, f"the tokenizer of teacher {folder} ({type(tokenizer).__name__})", None)
    if entry is not None and entry.trains == "student":
        config = meta["config"] if isinstance(meta["config"], dict) else {}
        if not config.get("merged") and config.get("teacher"):
            teacher = Path(config["teacher"])
            teacher = teacher if teacher.is_absolute() else folder / teacher  # as Student.from_pretrained finds it
            tokenizer = Teacher.tokenizer_of(teacher, device=device)
            where = f"the teacher's tokenizer of student {folder} ({type(tokenizer).__name__} from {teacher})"
            return LoadedTokenizer(tokenizer, where, None)
        where = f"the encoder, quantizer and decoder of merged student {folder}"
        return LoadedTokenizer(_student_tokenizer(folder, entry, device), where, MERGED_STUDENT_CAVEAT)
    tokenizers = ", ".join(families(is_tokenizer=True))
    raise ValueError(f"{folder} holds a {kind}; expected a tokenizer ({tokenizers}), a teacher or a student")


def _student_tokenizer(folder: Path, entry: Family, device: str | torch.device) -> Any:
    """A tokenizer of the student's tokenizer config, its weights taken from the student by name.

    The tokenizer class is the ``is_tokenizer`` family whose ``config_class`` is the type of
    ``student.config.tokenizer``; the student holds its tokenizer's parts under the same names
    (``encoder.*``, ``decoder.*``, ``quantizer.*``; Infinity's duplicate ``quantize.*`` is the quantizer).
    """
    student = entry.model_class().from_pretrained(folder, device="cpu")
    config = student.config.tokenizer
    classes = [tokenizer_family.model_class() for tokenizer_family in families(is_tokenizer=True).values()]
    matching = [cls for cls in classes if getattr(cls, "config_class", None) is type(config)]
    if not matching:
        raise ValueError(f"{folder}: no tokenizer family takes a {type(config).__name__}")
    tokenizer = matching[0](config)
    state = student.state_dict()
    wanted = {}
    for key in tokenizer.state_dict():
        source = key if key in state else "quantizer." + key.removeprefix("quantize.")
        if source not in state:
            raise ValueError(f"{folder}: the student holds no {key} for its tokenizer")
        wanted[key] = state[source]
    tokenizer.load_state_dict(wanted, strict=True)
    return tokenizer.to(device).eval()


# ------------------------------------------------------------------------------------------ schedules
@dataclass(frozen=True)
class ScaleSpec:
    """Which scales a round trip quantizes over (see :func:`parse_scales` for the syntax)."""

    kind: Literal["full", "count", "sides", "none"]
    count: int = 0
    """``count``: the first ``count`` scales of the tokenizer's schedule."""
    sides: tuple[int, ...] = ()
    """``sides``: square token-grid sides for the tile's grid, coarse to fine."""


SCALES_SYNTAX = """\
--scales takes one of:
  (omitted) or 'full'  the tokenizer's whole schedule for each tile's grid (default_schedule)
  N                    the first N scales of that schedule: the coarse-to-fine pyramid cut at scale N
  S1,S2,...,SK         square side lengths in tokens, strictly increasing, SK at most the tile's grid
                       (tile px / stride), e.g. 1,2,4,8,16,32 for a 512 px tile of a stride-16
                       tokenizer or a 256 px tile of a stride-8 one; ending below the grid drops the
                       finest detail; one side needs a trailing comma (32,). A tile with another grid
                       (an image smaller than the tile, or narrower in one direction) scales every side
                       by its grid / the tile's grid per axis (rounded, at least 1; repeats dropped)
  none                 no quantizer: the plain autoencoder round trip decode(encode(x))"""


def parse_scales(text: str | None) -> ScaleSpec:
    """Parse a ``--scales`` value (syntax: ``SCALES_SYNTAX``).

    Raises:
        ValueError: anything else, in one line.
    """
    if text is None or text.strip().lower() in ("", "full"):
        return ScaleSpec("full")
    value = text.strip().lower()
    if value == "none":
        return ScaleSpec("none")
    if "," not in value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"--scales {text!r}: expected a count N >= 1, a list of sides like 1,2,4,8,16, or none")
        return ScaleSpec("count", count=int(value))
    parts = [p.strip() for p in value.split(",")]
    if parts[-1] == "":
        parts.pop()  # "32," is a one-scale schedule
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"--scales {text!r}: sides must be positive integers separated by commas, e.g. 1,2,4,8,16")
    sides = tuple(int(p) for p in parts)
    if sides[0] < 1 or any(b <= a for a, b in zip(sides, sides[1:])):
        raise ValueError(f"--scales {text!r}: sides must be >= 1 and strictly increasing")
    return ScaleSpec("sides", sides=sides)


def schedule_for(spec: ScaleSpec, tokenizer: Any, height_px: int, width_px: int, tile_grid: int) -> Schedule | None:
    """The schedule of one (padded) tile of ``height_px`` x ``width_px``; None for ``kind == "none"``.

    ``tile_grid`` is the side of the full tile's token grid, which ``sides`` refer to.
    """
    if spec.kind == "none":
        return None
    full = tokenizer.default_schedule(height_px, width_px)
    if spec.kind == "full":
        return full
    if spec.kind == "count":
        return full[: spec.count]
    h, w = height_px // tokenizer.stride, width_px // tokenizer.stride
    grids: list[tuple[int, int]] = []
    for side in spec.sides:
        grid = (min(h, max(1, round(side * h / tile_grid))), min(w, max(1, round(side * w / tile_grid))))
        if not grids or grids[-1] != grid:
            grids.append(grid)
    return tuple(grids)


def check_scales(spec: ScaleSpec, tokenizer: Any, tile: int) -> None:
    """Refuse a spec that does not fit a full ``tile`` x ``tile`` px tile (one line)."""
    stride = int(tokenizer.stride)
    if tile < stride or tile % stride:
        raise ValueError(f"tile {tile} px is not a positive multiple of the tokenizer stride {stride}")
    grid = tile // stride
    if spec.kind == "count":
        available = len(tokenizer.default_schedule(tile, tile))
        if spec.count > available:
            raise ValueError(f"--scales {spec.count}: the schedule of a {tile} px tile has {available} scales")
    if spec.kind == "sides" and spec.sides[-1] > grid:
        raise ValueError(
            f"--scales ends at {spec.sides[-1]} tokens, larger than the tile's grid {grid} "
            f"({tile} px / stride {stride}); pass a larger --tile or smaller sides"
        )


# ------------------------------------------------------------------------------------------ round trip
class RoundTrip(Restorable, nn.Module):
    """encode -> quantize -> decode as a ``scale = 1`` ``OneStepSR`` model (any size that is a multiple
    of the stride; the ``Restorer`` pads and crops).

    Args:
        tokenizer: anything with ``stride``, ``encode``, ``tokenize``, ``decode`` and ``default_schedule``
            (images in [-1, 1]).
        scales: which scales to quantize over.
        tile: the full tile side in px (``sides`` refer to its grid).
        on_tokens: called with ``(tokens, schedule)`` after each quantization (e.g. statistics).
    """

    tokenizer: Any  # duck-typed: any tokenizer family with the interface above

    def __init__(
        self,
        tokenizer: Any,
        scales: ScaleSpec,
        tile: int,
        on_tokens: Callable[[MultiScaleTokens, Schedule], None] | None = None,
    ) -> None:
        super().__init__()
        check_scales(scales, tokenizer, tile)
        self.tokenizer = tokenizer
        self.scales = scales
        self.tile_grid = tile // int(tokenizer.stride)
        self.on_tokens = on_tokens
        # No mirrored border (edge_context 0): the tokens are those of the image itself.
        self._spec = RestoreSpec(scale=1, size_multiple=int(tokenizer.stride), edge_context=0, purpose="reconstruction")

    @property
    def restore_spec(self) -> RestoreSpec:
        return self._spec

    @torch.no_grad()
    def forward(self, x_B3HW: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of the stride -> the round trip, same shape, in [0, 1]."""
        x = x_B3HW * 2 - 1
        schedule = schedule_for(self.scales, self.tokenizer, x.shape[-2], x.shape[-1], self.tile_grid)
        if schedule is None:
            f_hat = self.tokenizer.encode(x)
        else:
            tokens = self.tokenizer.tokenize(x, schedule)
            if self.on_tokens is not None:
                self.on_tokens(tokens, schedule)
            f_hat = tokens.f_hat
        weight = next(self.tokenizer.parameters(), None)
        dtype = weight.dtype if weight is not None else x.dtype
        return (self.tokenizer.decode(f_hat.to(dtype)).float() + 1) / 2


def _scales_text(spec: ScaleSpec) -> str:
    """A ``--scales`` text for a parsed spec."""
    if spec.kind == "count":
        return str(spec.count)
    if spec.kind == "sides":
        return ",".join(map(str, spec.sides)) + ("," if len(spec.sides) == 1 else "")
    return spec.kind


def default_overlap(tile: int, stride: int) -> int:
    """Tile overlap in px: an eighth of the tile, at least one token, rounded up to whole tokens."""
    return min(tile - stride, max(stride, math.ceil(tile / 8 / stride) * stride))


class Reconstructor:
    """Round-trip whole images through a tokenizer, as ``varestorer reconstruct`` does, and keep per-scale
    token statistics over every image that went through.

    Args:
        model: a tokenizer, teacher or student folder or an embedded name (:func:`find_tokenizer`);
            default :func:`default_tokenizer_source`.
        scales: a ``--scales`` text (:data:`SCALES_SYNTAX`) or a parsed :class:`ScaleSpec`.
        tile, tile_overlap: tile side and overlap in px (default overlap: :func:`default_overlap`).
        device, dtype, batch_size: as for :class:`~varestorer.inference.restorer.Restorer`.

    Calling it with an image (PIL, numpy or tensor, as a ``Restorer`` takes) returns the round trip in
    the same kind; :meth:`statistics` and :meth:`report` cover the images so far.

    Raises:
        ValueError: bad scales, tile, overlap, batch size or device (one line).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        scales: str | ScaleSpec | None = None,
        tile: int = 512,
        tile_overlap: int | None = None,
        device: str | torch.device | None = None,
        dtype: str = "float32",
        batch_size: int = 1,
    ) -> None:
        self.scales = scales if isinstance(scales, ScaleSpec) else parse_scales(scales)
        self.scales_text = scales if isinstance(scales, str) and scales else _scales_text(self.scales)
        if batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
        self.tokenizer, self.where, self.caveat = find_tokenizer(model or default_tokenizer_source())
        stride = int(self.tokenizer.stride)
        self.tile = tile
        self.overlap = default_overlap(tile, stride) if tile_overlap is None else tile_overlap
        if not 0 <= self.overlap < tile:
            raise ValueError(f"--tile-overlap must be in [0, {tile}) for a {tile} px tile, got {self.overlap}")
        self._total, self._current, self.images = TokenStatistics(), TokenStatistics(), 0
        round_trip = RoundTrip(self.tokenizer, self.scales, tile, on_tokens=lambda t, s: self._current.add(t, s))
        try:
            self.restorer = Restorer(
                round_trip, device=device, dtype=dtype, tile=tile, tile_overlap=self.overlap, batch_size=batch_size
            )
        except (RuntimeError, AssertionError) as error:  # e.g. CUDA asked of a CPU-only torch
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"--device {device}: {reason}") from None
        self.tile_schedule = schedule_for(self.scales, self.tokenizer, tile, tile, tile // stride)

    def describe(self) -> str:
        """One line: which tokenizer, tile, overlap, scales and device."""
        sides = "none" if self.tile_schedule is None else ",".join(str(h) for h, _ in self.tile_schedule)
        return (
            f"tokenizer: {self.where}; stride {self.tokenizer.stride}, {self.tokenizer.token_dim} bits per token; "
            f"tile {self.tile} px (overlap {self.overlap}); scales {self.scales_text} (a full tile: {sides}); "
            f"on {self.restorer.device} ({self.restorer.dtype})"
        )

    def __call__(self, image: Any, progress: Callable[[int, int], None] | None = None) -> Any:
        """The round trip of ``image``; its token statistics count only once it succeeded."""
        self._current = TokenStatistics()
        result = self.restorer(image, progress=progress)
        self._total.merge(self._current)
        self.images += 1
        return result

    def statistics(self) -> list[ScaleStatistics]:
        """Per-scale statistics over every image so far (empty with ``scales`` none)."""
        return self._total.result()

    def report(self) -> dict[str, Any]:
        """The ``--stats`` JSON: tokenizer, tiling, schedule, image count and per-scale statistics."""
        return {
            "tokenizer": self.where,
            "tile": self.tile,
            "tile_overlap": self.overlap,
            "scales": self.scales_text,
            "tile_schedule": [list(hw) for hw in self.tile_schedule or ()],
            "images": self.images,
            "per_scale": [s.to_dict() for s in self.statistics()],
        }


__all__ = [
    "DEFAULT_TOKENIZER",
    "MERGED_STUDENT_CAVEAT",
    "SCALES_SYNTAX",
    "LoadedTokenizer",
    "Reconstructor",
    "RoundTrip",
    "ScaleSpec",
    "check_scales",
    "default_overlap",
    "default_tokenizer_source",
    "find_tokenizer",
    "parse_scales",
    "schedule_for",
]
