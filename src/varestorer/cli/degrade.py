"""``varestorer degrade``: build paired test/training sets (GT crops + synthetic LQ) with a manifest.

Writes ``DST/gt/NAME.png``, ``DST/lq/NAME.png`` and ``DST/manifest.json`` (per image: source, seed,
crop box and every drawn degradation parameter). The whole DST folder appears atomically; bad input
files are reported, the rest processed, and the exit status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from varestorer.cli._progress import Progress
from varestorer.config import config_to_dict
from varestorer.data.transforms import mod_crop, pad_reflect, to_tensor, to_uint8
from varestorer.degradation.config import DEGRADATION_PRESETS, resolve_degradation_config
from varestorer.degradation.pipeline import degrade
from varestorer.io.atomic import atomic_directory, atomic_path
from varestorer.io.images import ImageReadError, list_images, read_rgb, write_image

logger = logging.getLogger("varestorer.degrade")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SRC", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="DST", help="output folder (gt/, lq/, manifest.json)")
    parser.add_argument(
        "--preset",
        default="mild",
        help=f"{' | '.join(DEGRADATION_PRESETS)} or a .toml/.json pipeline file (default: mild)",
    )
    parser.add_argument("--scale", type=int, default=None, help="downscale factor (default: the preset's, 4)")
    parser.add_argument("--crop", default="512", help="GT crop side in px (a multiple of the scale), or 'none'")
    parser.add_argument("--crop-mode", choices=("center", "random"), default="center", help="crop position")
    parser.add_argument(
        "--per-image",
        type=int,
        default=1,
        metavar="N",
        help="random crops per image, named NAME_000.png ... (StableSR's DIV2K-Val: 100 images x 30)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed; each image's seed depends on it and its name")
    parser.add_argument("--resize-back", action="store_true", help="bicubic-resize the LQ back to the GT size")
    parser.add_argument("-r", "--recursive", action="store_true", help="search folders recursively")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty DST")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress (a bar on a terminal, else lines)")


def image_seed(base_seed: int, name: str) -> int:
    """Per-image seed: stable under adding/removing other images."""
    return zlib.crc32(f"{base_seed}:{name}".encode())


def _crop(array, crop: int | None, mode: str, scale: int, generator: torch.Generator) -> tuple[Any, dict[str, Any]]:
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


def _output_names(paths: list[Path]) -> list[str]:
    names: dict[str, Path] = {}
    for path in paths:
        if path.stem in names:
            raise ValueError(f"two inputs share the name {path.stem!r}: {names[path.stem]} and {path}")
        names[path.stem] = path
    return list(names)


def run(args: argparse.Namespace) -> int:
    config = resolve_degradation_config(args.preset)
    if args.scale is not None:
        if args.scale < 1:
            raise ValueError(f"--scale must be >= 1, got {args.scale}")
        config = dataclasses.replace(config, scale=args.scale)
    scale = config.scale
    crop = None if args.crop.lower() == "none" else int(args.crop) if args.crop.isdigit() else -1
    if crop is not None and (crop < scale or crop % scale):
        raise ValueError(f"--crop must be 'none' or a positive multiple of the scale {scale}, got {args.crop!r}")
    paths = list_images(args.sources, recursive=args.recursive)
    if not paths:
        raise FileNotFoundError(f"no images found in {', '.join(args.sources)}")
    if args.per_image < 1:
        raise ValueError(f"--per-image must be >= 1, got {args.per_image}")
    if args.per_image > 1 and (crop is None or args.crop_mode != "random"):
        raise ValueError("--per-image > 1 needs --crop SIZE and --crop-mode random")
    names = _output_names(paths)
    if args.per_image > 1:
        jobs = [(path, f"{name}_{k:03d}") for path, name in zip(paths, names) for k in range(args.per_image)]
    else:
        jobs = list(zip(paths, names))
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.overwrite:
        raise FileExistsError(f"{output} exists and is not empty; pass --overwrite to replace it")
    resolved = output.resolve()
    if any(resolved == p.resolve().parent or resolved in p.resolve().parents for p in paths) and args.overwrite:
        raise ValueError(f"{output} contains input images; choose another output folder")
    manifest: dict[str, Any] = {
        "preset": str(args.preset),
        "config": config_to_dict(config),
        "scale": scale,
        "crop": crop,
        "crop_mode": args.crop_mode,
        "seed": args.seed,
        "resize_back": "bicubic" if args.resize_back else None,
        "images": {},
        "failed": {},
    }
    decoded: tuple[Path, Any] | None = None  # the last decoded source (reused by --per-image crops)
    with (
        atomic_directory(output, overwrite=args.overwrite) as tmp,
        Progress(len(jobs), desc="degrade", quiet=args.quiet) as progress,
    ):
        for path, name in jobs:
            progress.start(name)
            if str(path) in manifest["failed"]:
                progress.finish("failed")
                continue
            seed = image_seed(args.seed, name)
            try:
                if decoded is None or decoded[0] != path:
                    decoded = (path, read_rgb(path))
                generator = torch.Generator().manual_seed(seed)
                gt_array, box = _crop(decoded[1], crop, args.crop_mode, scale, generator)
                gt = to_tensor(gt_array)
                lq, params = degrade(gt, config, generator)
                if args.resize_back:
                    lq = F.interpolate(lq[None], size=gt.shape[1:], mode="bicubic", align_corners=False)[0]
                write_image(tmp / "gt" / f"{name}.png", to_uint8(gt))
                write_image(tmp / "lq" / f"{name}.png", to_uint8(lq))
            except (ImageReadError, ValueError, OSError) as error:
                progress.write(f"FAILED {path}: {error}")
                manifest["failed"][str(path)] = str(error)
                progress.finish("failed")
                continue
            manifest["images"][name] = {
                "source": str(path),
                "seed": seed,
                "crop": box,
                "gt_size": list(gt.shape[1:]),
                "lq_size": list(lq.shape[1:]),
                "params": params,
            }
            progress.finish("wrote")
        with atomic_path(tmp / "manifest.json") as manifest_tmp:
            manifest_tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    done, failed = len(manifest["images"]), len(manifest["failed"])
    print(f"wrote {done} pair(s) to {output}" + (f"; {failed} file(s) failed (see manifest.json)" if failed else ""))
    return 1 if failed else 0
