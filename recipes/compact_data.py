"""Copy a folder of training photos into a compact form: long side <= N px, high-quality JPEG.

Used to carry the default model's training set to a rented GPU machine (the whole set must travel in
a few tens of MB). Photos already small enough and already JPEG are copied byte for byte.

    python recipes/compact_data.py local/data/train local/gpu/data/train --long-side 512 --format webp --quality 90
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageOps

from varestorer.io.images import list_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--long-side", type=int, default=512)
    parser.add_argument("--quality", type=int, default=94)
    parser.add_argument("--format", choices=("jpeg", "webp"), default="jpeg", help="webp: ~25%% smaller files")
    args = parser.parse_args(argv)
    if args.dst.exists() and any(args.dst.iterdir()):
        print(f"error: {args.dst} is not empty", file=sys.stderr)
        return 2
    failed = []
    for path in list_images([args.src], recursive=True):
        suffix = ".jpg" if args.format == "jpeg" else ".webp"
        out = args.dst / path.relative_to(args.src).with_suffix(suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                small = max(image.size) <= args.long_side
                if small and args.format == "jpeg" and path.suffix.lower() in (".jpg", ".jpeg"):
                    shutil.copyfile(path, out)
                    continue
                image = image.convert("RGB")
                if not small:
                    scale = args.long_side / max(image.size)
                    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                    image = image.resize(size, Image.Resampling.LANCZOS)
                options = {"subsampling": 0} if args.format == "jpeg" else {"method": 6}
                image.save(out, quality=args.quality, **options)
        except OSError as error:
            failed.append(f"{path}: {error}")
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
