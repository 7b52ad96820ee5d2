"""``varestorer degrade``: build paired test/training sets (GT crops + synthetic LQ) with a manifest.

Writes ``DST/gt/NAME.png``, ``DST/lq/NAME.png`` and ``DST/manifest.json`` (per image: source, seed,
crop box and every drawn degradation parameter). The whole DST folder appears atomically; bad input
files are reported, the rest processed, and the exit status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from varestorer.cli._progress import Progress
from varestorer.data.paired_set import image_seed, plan_paired_set, write_paired_set
from varestorer.degradation.config import DEGRADATION_PRESETS

__all__ = ["add_arguments", "image_seed", "run"]  # image_seed: benchmarks/degradation_contact_sheet.py reads it here


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


def run(args: argparse.Namespace) -> int:
    crop = None if args.crop.lower() == "none" else int(args.crop) if args.crop.isdigit() else -1
    plan = plan_paired_set(
        args.sources,
        degradation=args.preset,
        scale=args.scale,
        crop=crop,
        crop_mode=args.crop_mode,
        per_image=args.per_image,
        seed=args.seed,
        resize_back=args.resize_back,
        recursive=args.recursive,
    )
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.overwrite:
        raise FileExistsError(f"{output} exists and is not empty; pass --overwrite to replace it")

    def progress(total: int) -> Progress:
        return Progress(total, desc="degrade", quiet=args.quiet)

    manifest = write_paired_set(plan, output, overwrite=args.overwrite, progress=progress)
    done, failed = len(manifest["images"]), len(manifest["failed"])
    print(f"wrote {done} pair(s) to {output}" + (f"; {failed} file(s) failed (see manifest.json)" if failed else ""))
    return 1 if failed else 0
