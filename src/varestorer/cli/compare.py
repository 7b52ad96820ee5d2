"""``varestorer compare``: a labelled side-by-side sheet of crops, LQ | each method | GT, per image or one grid.

    varestorer compare photos/ --method default --method realesrgan-x4plus --method osediff=results/osediff \\
        --gt photos_gt/ --crop 100,80,128,128 -o sheets/

Methods (``--method [LABEL=]SPEC``, in column order): ``bicubic``/``lanczos`` (PIL resize), the peers
``realesrgan-x4plus``/``realesr-general-x4v3``, an embedded model name (``default``, ``v2l``), a model
folder (with ``config.json``) or a peer weights file, or a **folder of stored outputs** (images named by
the LQ's stem, e.g. a paper's released results). Each method restores the whole LQ image once; crops
are then cut from every column at the same place in output pixels (``--crop x,y,w,h``, repeatable; or
``--auto-crops N`` windows of ``--crop-size`` px where the reference (GT, else the bicubic upscale) has
the most detail). The LQ column is the LQ upscaled with nearest neighbours, so its pixels stay visible.

Writes one sheet per image (``-o FOLDER``: ``FOLDER/STEM.jpg``) or all rows in one file (``--grid``:
``-o FILE``), atomically; an existing file is kept unless ``--overwrite``. A bad input (unreadable, no
stored output or GT of that stem, a crop outside the image) is reported and the others go on; the
exit code is 1 when any image failed, naming each.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from varestorer.io.images import ImageReadError, list_images, read_rgb, write_image

Crop = tuple[int, int, int, int]  # x, y, w, h in output pixels
INTERPOLATIONS = ("bicubic", "lanczos")
PEERS = ("realesrgan-x4plus", "realesr-general-x4v3")
LABEL_HEIGHT = 14  # px of the text band above every tile
GAP = 2  # px between tiles
BACKGROUND = (255, 255, 255)


@dataclass
class Method:
    label: str
    restore: Callable[[np.ndarray, str], np.ndarray]
    """(LQ (H, W, 3) uint8, its stem) -> (scale H, scale W, 3) uint8."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="LQ image files, folders or glob patterns")
    parser.add_argument(
        "--method",
        action="append",
        required=True,
        help="[LABEL=]SPEC: bicubic, lanczos, realesrgan-x4plus, realesr-general-x4v3, an embedded model name, "
        "a model folder or weights file, or a folder of stored outputs (same stems); repeat, in column order",
    )
    parser.add_argument("--gt", help="folder of ground truths (same stems): adds a GT column")
    parser.add_argument("-o", "--output", required=True, help="output folder (one sheet per image) or --grid file")
    parser.add_argument("--grid", action="store_true", help="write every image's rows into one file (-o FILE)")
    parser.add_argument("--crop", action="append", default=[], help="x,y,w,h in output pixels (repeatable)")
    parser.add_argument("--auto-crops", type=int, default=1, help="crops chosen per image without --crop (default 1)")
    parser.add_argument("--crop-size", type=int, default=128, help="side of automatic crops in output px (128)")
    parser.add_argument("--zoom", type=int, default=1, help="show crops this many times larger (nearest; default 1)")
    parser.add_argument("--scale", type=int, default=4, help="output/LQ size ratio (default 4)")
    parser.add_argument("--ext", default="jpg", choices=("jpg", "png", "webp"), help="sheet format (default jpg)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG/WebP quality (default 90)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing sheets")
    parser.add_argument("--device", default=None, help="torch device for the models (default: the best available)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only failures")


# ---------------------------------------------------------------------------------------------- methods
def _resize(array: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """PIL resize of an (H, W, 3) uint8 array to ``size`` = (width, height)."""
    resample = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}[method]
    return np.asarray(Image.fromarray(array).resize(size, resample))


def _stored_outputs(folder: Path, scale: int) -> Callable[[np.ndarray, str], np.ndarray]:
    by_stem = {path.stem: path for path in list_images([folder])}

    def restore(lq: np.ndarray, stem: str) -> np.ndarray:
        if stem not in by_stem:
            raise ValueError(f"no stored output named {stem}.* in {folder}")
        image = read_rgb(by_stem[stem])
        target = (lq.shape[0] * scale, lq.shape[1] * scale)
        if image.shape[:2] != target:
            raise ValueError(
                f"{by_stem[stem]}: {image.shape[1]}x{image.shape[0]}, expected {target[1]}x{target[0]} "
                f"(x{scale} of the LQ)"
            )
        return image

    return restore


def load_method(text: str, *, scale: int, device: str | None = None) -> Method:
    """``[LABEL=]SPEC`` -> a method; models load now, so a bad spec fails before any image."""
    label, sep, spec = text.partition("=")
    if not sep:
        label, spec = Path(text).name or text, text
    if not label or not spec:
        raise ValueError(f"--method expects [LABEL=]SPEC, got {text!r}")
    if spec in INTERPOLATIONS:
        return Method(label, lambda lq, _: _resize(lq, (lq.shape[1] * scale, lq.shape[0] * scale), spec))
    path = Path(spec)
    if path.is_dir() and not (path / "config.json").is_file() and list_images([path]):
        return Method(label, _stored_outputs(path, scale))
    from varestorer.inference.restorer import Restorer

    if spec in PEERS:
        from varestorer.cli.baseline import _weights  # the same weights as `varestorer baseline`
        from varestorer.foreign.peers import load_peer

        weights = _weights(argparse.Namespace(weights=None, method=spec))
        restorer = Restorer(load_peer(weights, arch=spec), device=device)
    else:
        restorer = Restorer.from_pretrained(spec, device=device)
    return Method(label, lambda lq, _: restorer(lq, scale=scale))


# ------------------------------------------------------------------------------------------------ crops
def parse_crop(text: str) -> Crop:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--crop expects x,y,w,h (integers, output pixels), got {text!r}") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise ValueError(f"--crop needs x, y >= 0 and w, h >= 1, got {text!r}")
    return x, y, w, h


def auto_crops(reference: np.ndarray, count: int, size: int) -> list[Crop]:
    """Up to ``count`` non-overlapping ``size``-px windows with the most gradient energy, best first."""
    height, width = reference.shape[:2]
    size = min(size, height, width)
    gray = reference.astype(np.float64).mean(axis=2)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, size // 4)
    candidates = []
    for y in range(0, height - size + 1, step):
        for x in range(0, width - size + 1, step):
            total = integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x]
            candidates.append((total, y, x))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen: list[Crop] = []
    for _, y, x in candidates:
        if len(chosen) == count:
            break
        if all(abs(x - cx) >= size or abs(y - cy) >= size for cx, cy, _, _ in chosen):
            chosen.append((x, y, size, size))
    return chosen


# ------------------------------------------------------------------------------------------------ sheet
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the bitmap font only
        return ImageFont.load_default()


def _label(tile: np.ndarray, text: str, font) -> Image.Image:
    """The tile with a white band above holding ``text`` (cut to the tile's width)."""
    image = Image.new("RGB", (tile.shape[1], tile.shape[0] + LABEL_HEIGHT), BACKGROUND)
    image.paste(Image.fromarray(tile), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(image)
    while text and draw.textlength(text, font=font) > tile.shape[1] - 2:
        text = text[:-1]
    draw.text((1, 1), text, fill=(0, 0, 0), font=font)
    return image


def sheet_row(columns: list[tuple[str, np.ndarray]], crop: Crop, zoom: int, title: str) -> Image.Image:
    """One row: each column's ``crop``, labelled, side by side; ``title`` (image and crop) above the row."""
    x, y, w, h = crop
    font = _font()
    tiles: list[Image.Image] = []
    for label, image in columns:
        if x + w > image.shape[1] or y + h > image.shape[0]:
            raise ValueError(f"crop {x},{y},{w},{h} lies outside the {image.shape[1]}x{image.shape[0]} output")
        pixels = image[y : y + h, x : x + w]
        if zoom > 1:
            pixels = pixels.repeat(zoom, axis=0).repeat(zoom, axis=1)
        tiles.append(_label(np.ascontiguousarray(pixels), label, font))
    width = sum(t.width for t in tiles) + GAP * (len(tiles) - 1)
    row = Image.new("RGB", (width, tiles[0].height + LABEL_HEIGHT), BACKGROUND)
    ImageDraw.Draw(row).text((1, 1), title, fill=(90, 90, 90), font=font)
    left = 0
    for tile in tiles:
        row.paste(tile, (left, LABEL_HEIGHT))
        left += tile.width + GAP
    return row


def stack_rows(rows: list[Image.Image]) -> np.ndarray:
    width = max(row.width for row in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows) + GAP * (len(rows) - 1)), BACKGROUND)
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height + GAP
    return np.asarray(sheet)


def image_rows(
    lq_path: Path, methods: list[Method], gt: dict[str, Path] | None, crops: list[Crop], args: argparse.Namespace
) -> list[Image.Image]:
    """Every method on one LQ image, then one sheet row per crop."""
    stem, scale = lq_path.stem, args.scale
    lq = read_rgb(lq_path)
    size = (lq.shape[1] * scale, lq.shape[0] * scale)
    reference = None
    if gt is not None:
        if stem not in gt:
            raise ValueError(f"no ground truth named {stem}.* in {args.gt}")
        reference = read_rgb(gt[stem])
        if reference.shape[:2] != (size[1], size[0]):
            raise ValueError(f"{gt[stem]}: {reference.shape[1]}x{reference.shape[0]}, expected {size[0]}x{size[1]}")
    columns = [("LQ", lq.repeat(scale, axis=0).repeat(scale, axis=1))]
    columns += [(method.label, method.restore(lq, stem)) for method in methods]
    if reference is not None:
        columns.append(("GT", reference))
    crops = crops or auto_crops(reference if reference is not None else _resize(lq, size, "bicubic"),
                                args.auto_crops, args.crop_size)  # fmt: skip
    return [sheet_row(columns, crop, args.zoom, f"{stem}  {','.join(map(str, crop))}") for crop in crops]


def run(args: argparse.Namespace) -> int:
    if args.scale < 1 or args.zoom < 1 or args.auto_crops < 1 or args.crop_size < 8:
        raise ValueError("--scale, --zoom and --auto-crops must be >= 1 and --crop-size >= 8")
    crops = [parse_crop(text) for text in args.crop]
    inputs = list_images(args.inputs)
    if not inputs:
        raise FileNotFoundError(f"no images found in {' '.join(args.inputs)}")
    output = Path(args.output)
    if args.grid and output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    gt = None
    if args.gt:
        if not Path(args.gt).is_dir():
            raise FileNotFoundError(f"ground-truth folder not found: {args.gt}")
        gt = {path.stem: path for path in list_images([args.gt])}
    methods = [load_method(text, scale=args.scale, device=args.device) for text in args.method]
    failures: list[str] = []
    grid_rows: list[Image.Image] = []
    for path in inputs:
        try:
            rows = image_rows(path, methods, gt, crops, args)
            if args.grid:
                grid_rows += rows
                continue
            target = output / f"{path.stem}.{args.ext}"
            write_image(target, stack_rows(rows), overwrite=args.overwrite, quality=args.quality)
            if not args.quiet:
                print(f"{path} -> {target}")
        except (ImageReadError, ValueError, FileExistsError, OSError) as error:
            failures.append(f"{path}: {error}")
            print(f"failed: {path}: {error}", file=sys.stderr)
    if args.grid and grid_rows:
        write_image(output, stack_rows(grid_rows), overwrite=args.overwrite, quality=args.quality)
        if not args.quiet:
            print(f"{len(grid_rows)} row(s) -> {output}")
    if failures:
        print(f"{len(failures)} of {len(inputs)} image(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0
