"""Paired test/training sets on disk: GT crops, their synthetic LQ, and a manifest of every drawn parameter.

:func:`build_paired_set` (:func:`plan_paired_set`, then :func:`write_paired_set`: what ``varestorer degrade``
runs) writes

    OUTPUT/gt/NAME.png      the GT crop (or the whole image, mod-cropped to the scale)
    OUTPUT/lq/NAME.png      its degraded LQ (optionally bicubic-resized back to the GT size)
    OUTPUT/manifest.json    the settings, and per image its source, seed, crop box and degradation draws

The whole folder appears at once (``io.atomic``) and an existing non-empty one is replaced only with
``overwrite``. Unreadable or too-small images are recorded under ``failed`` and the rest are processed.
Each image's generator is seeded from the base seed and its name only, so adding or removing other images
leaves its pair unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from varestorer.config import config_to_dict
from varestorer.data.transforms import mod_crop, pad_reflect, to_tensor, to_uint8
from varestorer.degradation.config import DegradationConfig, resolve_degradation_config
from varestorer.degradation.pipeline import degrade
from varestorer.io.atomic import atomic_directory, atomic_path
from varestorer.io.images import ImageReadError, list_images, read_rgb, write_image

CropMode = Literal["center", "random"]


class PairProgress(Protocol):
    """What :func:`build_paired_set` reports to, one pair at a time (``cli._progress.Progress`` is one)."""

    def start(self, name: str) -> None: ...

    def finish(self, status: str) -> None: ...

    def write(self, message: str) -> None: ...


class _Silent:
    def start(self, name: str) -> None:
        pass

    def finish(self, status: str) -> None:
        pass

    def write(self, message: str) -> None:
        pass


def image_seed(base_seed: int, name: str) -> int:
    """Per-image seed: stable under adding/removing other images."""
    return zlib.crc32(f"{base_seed}:{name}".encode())


def crop_gt(
    array: np.ndarray, crop: int | None, mode: CropMode, scale: int, generator: torch.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """(H, W, 3) image -> its ``crop`` x ``crop`` GT crop and the crop box for the manifest.

    ``crop=None`` keeps the whole image, cut down to a multiple of ``scale``; a smaller image is
    reflect-padded up to ``crop`` first (``padded`` in the box). ``random`` positions draw from ``generator``.
    """
    height, width = array.shape[:2]
    if crop is None:
        array = mod_crop(array, scale)
        return array, {"top": 0, "left": 0, "size": [array.shape[0], array.shape[1]], "padded": False}
    padded = height < crop or width < crop
    array = pad_reflect(array, crop, crop)
    height, width = array.shape[:2]
    if mode == "random":
        top = int(torch.randint(height - crop + 1, (1,), generator=generator).item())
        left = int(torch.randint(width - crop + 1, (1,), generator=generator).item())
    else:
        top, left = (height - crop) // 2, (width - crop) // 2
    box = {"top": top, "left": left, "size": [crop, crop], "padded": padded}
    return array[top : top + crop, left : left + crop], box


def output_names(paths: Sequence[Path]) -> list[str]:
    """One output name per input (its stem); two inputs with the same stem are a ``ValueError``."""
    names: dict[str, Path] = {}
    for path in paths:
        if path.stem in names:
            raise ValueError(f"two inputs share the name {path.stem!r}: {names[path.stem]} and {path}")
        names[path.stem] = path
    return list(names)


@dataclasses.dataclass(frozen=True)
class PairedSetPlan:
    """What :func:`write_paired_set` will write: checked settings and the (source, output name) of every pair."""

    config: DegradationConfig
    preset: str | None
    """The preset name or pipeline file the config came from (None: a config object)."""
    crop: int | None
    crop_mode: CropMode
    seed: int
    resize_back: bool
    jobs: tuple[tuple[Path, str], ...]


def plan_paired_set(
    sources: Sequence[str | Path],
    *,
    degradation: DegradationConfig | str | Path = "mild",
    scale: int | None = None,
    crop: int | None = 512,
    crop_mode: CropMode = "center",
    per_image: int = 1,
    seed: int = 0,
    resize_back: bool = False,
    recursive: bool = False,
) -> PairedSetPlan:
    """Check the settings and list the pairs to write (nothing is read or written but the image list).

    Args:
        sources: image files, folders or glob patterns (``recursive``: search folders recursively).
        degradation: a pipeline config, a preset name (``mild``, ``realesrgan``, ...) or a ``.toml``/``.json`` file.
        scale: overrides the pipeline's downscale factor.
        crop: GT crop side in px (a multiple of the scale), or None for the whole image.
        crop_mode: ``center`` or ``random`` crop positions.
        per_image: random crops per image, named ``NAME_000`` ... (needs ``crop`` and ``random``).
        seed: base seed; each pair's generator is seeded with :func:`image_seed` of it and the pair's name.
        resize_back: bicubic-resize the LQ back to the GT size.

    Raises:
        ValueError: a bad setting, or two inputs with the same name.
        FileNotFoundError: no images in ``sources``.
    """
    config = resolve_degradation_config(degradation) if isinstance(degradation, str | Path) else degradation
    if scale is not None:
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        config = dataclasses.replace(config, scale=scale)
    scale = config.scale
    if crop is not None and (crop < scale or crop % scale):
        raise ValueError(f"crop must be None or a positive multiple of the scale {scale}, got {crop}")
    paths = list_images(sources, recursive=recursive)
    if not paths:
        raise FileNotFoundError(f"no images found in {', '.join(str(s) for s in sources)}")
    if per_image < 1:
        raise ValueError(f"per_image must be >= 1, got {per_image}")
    if per_image > 1 and (crop is None or crop_mode != "random"):
        raise ValueError("per_image > 1 needs a crop size and random crop positions")
    names = output_names(paths)
    if per_image > 1:
        jobs = [(path, f"{name}_{k:03d}") for path, name in zip(paths, names) for k in range(per_image)]
    else:
        jobs = list(zip(paths, names))
    preset = str(degradation) if isinstance(degradation, str | Path) else None
    return PairedSetPlan(config, preset, crop, crop_mode, seed, resize_back, tuple(jobs))


def write_paired_set(
    plan: PairedSetPlan,
    output: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int], AbstractContextManager[PairProgress]] | None = None,
) -> dict[str, Any]:
    """Write the plan's pairs and ``manifest.json`` into ``output``, which appears whole (see the module docstring).

    Args:
        overwrite: replace an existing non-empty ``output``.
        progress: called with the number of pairs; returns a context manager that is told each pair.

    Returns:
        The manifest written (``images``: name -> entry; ``failed``: source -> error).

    Raises:
        FileExistsError: ``output`` exists, is not empty and ``overwrite`` is false.
        ValueError: ``overwrite`` and ``output`` holds input images.
    """
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty; pass overwrite to replace it")
    resolved = output.resolve()
    if overwrite and any(resolved == p.resolve().parent or resolved in p.resolve().parents for p, _ in plan.jobs):
        raise ValueError(f"{output} contains input images; choose another output folder")
    manifest: dict[str, Any] = {
        "preset": plan.preset,
        "config": config_to_dict(plan.config),
        "scale": plan.config.scale,
        "crop": plan.crop,
        "crop_mode": plan.crop_mode,
        "seed": plan.seed,
        "resize_back": "bicubic" if plan.resize_back else None,
        "images": {},
        "failed": {},
    }
    decoded: tuple[Path, np.ndarray] | None = None  # the last decoded source (reused by per-image crops)
    reporter = progress(len(plan.jobs)) if progress is not None else nullcontext(_Silent())
    with atomic_directory(output, overwrite=overwrite) as tmp, reporter as report:
        for path, name in plan.jobs:
            report.start(name)
            if str(path) in manifest["failed"]:
                report.finish("failed")
                continue
            try:
                if decoded is None or decoded[0] != path:
                    decoded = (path, read_rgb(path))
                entry = _write_pair(tmp, name, decoded[1], plan, image_seed(plan.seed, name))
            except (ImageReadError, ValueError, OSError) as error:
                report.write(f"FAILED {path}: {error}")
                manifest["failed"][str(path)] = str(error)
                report.finish("failed")
                continue
            manifest["images"][name] = {"source": str(path), **entry}
            report.finish("wrote")
        with atomic_path(tmp / "manifest.json") as manifest_tmp:
            manifest_tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def build_paired_set(
    sources: Sequence[str | Path],
    output: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int], AbstractContextManager[PairProgress]] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """:func:`plan_paired_set` (``settings`` are its keyword arguments) then :func:`write_paired_set`.

    Example: ``build_paired_set(["set14/"], "set14_mild", degradation="mild", crop=None)``.
    """
    return write_paired_set(plan_paired_set(sources, **settings), output, overwrite=overwrite, progress=progress)


def _write_pair(folder: Path, name: str, array: np.ndarray, plan: PairedSetPlan, seed: int) -> dict[str, Any]:
    """Crop, degrade and write one pair into ``folder``; returns its manifest entry (without the source)."""
    generator = torch.Generator().manual_seed(seed)
    gt_array, box = crop_gt(array, plan.crop, plan.crop_mode, plan.config.scale, generator)
    gt = to_tensor(gt_array)
    lq, params = degrade(gt, plan.config, generator)
    if plan.resize_back:
        lq = F.interpolate(lq[None], size=gt.shape[1:], mode="bicubic", align_corners=False)[0]
    write_image(folder / "gt" / f"{name}.png", to_uint8(gt))
    write_image(folder / "lq" / f"{name}.png", to_uint8(lq))
    return {"seed": seed, "crop": box, "gt_size": list(gt.shape[1:]), "lq_size": list(lq.shape[1:]), "params": params}
