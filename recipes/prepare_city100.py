"""Turn City100's same-size real camera LR/HR pairs into x4 training pairs, and measure LQ sharpness and noise.

City100 (Chen et al., "Camera Lens Super-Resolution", CVPR 2019) shot each postcard twice on a tripod: at a
long focal length (HR) and a ~2.9x shorter one (LR), then registered the LR to the HR's pixel grid, so both
files have the same size. For x4 training pairs this keeps the HR as the GT (cut to a multiple of 4) and
downscales the registered LR by 4 with a box filter (the exact area average of each 4x4 block), so the LQ
carries the camera's own lens blur, demosaicing and noise instead of a synthetic degradation:

    python recipes/prepare_city100.py prepare ../shared/data/train_extra/city100_nikon \\
        ../shared/data/train_extra/city100_iphone --out local/data/city100_x4
    # -> local/data/city100_x4/{lq,gt}/city100_nikon_004.png ...: [data] real_pairs = ["local/data/city100_x4"]

    python recipes/prepare_city100.py stats local/data/city100_x4 ../shared/data/real_pairs/drealsr
    # per pair folder: LQ gradient and noise next to the synthetic presets' LQ of the same GTs

A script, not a ``varestorer`` subcommand: it knows one dataset's layout (``hr/``, ``lr/``, same size) and
the ratio of its two focal lengths; the package's commands take any folder.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

from varestorer.data.transforms import mod_crop, to_tensor, to_uint8
from varestorer.degradation.config import resolve_degradation_config
from varestorer.degradation.pipeline import degrade
from varestorer.io.atomic import atomic_directory
from varestorer.io.images import list_images, read_rgb, write_image

SCALE = 4


def box_downscale(array_HWC: np.ndarray, factor: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 (sides multiples of ``factor``) -> each ``factor`` x ``factor`` block's mean, rounded."""
    height, width, channels = array_HWC.shape
    blocks = array_HWC.reshape(height // factor, factor, width // factor, factor, channels).astype(np.float64)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


def by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    return {path.stem: path for path in list_images([folder])}


def prepare(sources: list[Path], out: Path, overwrite: bool) -> int:
    """Write ``out/{lq,gt}/SOURCE_STEM.png`` for every ``hr/``+``lr/`` pair of each source folder."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        print(f"error: {out} is not empty (--overwrite replaces it)", file=sys.stderr)
        return 2
    count = 0
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "gt").mkdir()
        (tmp / "lq").mkdir()
        for source in sources:
            hr, lr = by_stem(source / "hr"), by_stem(source / "lr")
            if set(hr) != set(lr) or not hr:
                raise ValueError(f"{source}: hr/ and lr/ must hold the same, non-empty set of stems")
            for stem in sorted(hr):
                gt, lq = mod_crop(read_rgb(hr[stem]), SCALE), mod_crop(read_rgb(lr[stem]), SCALE)
                if gt.shape != lq.shape:
                    raise ValueError(f"{source}/{stem}: HR {gt.shape[:2]} and LR {lq.shape[:2]} differ in size")
                name = f"{source.name}_{stem}.png"
                write_image(tmp / "gt" / name, gt)
                write_image(tmp / "lq" / name, box_downscale(lq, SCALE))
                count += 1
    print(f"{count} pairs -> {out}/{{lq,gt}} (GT {SCALE}x the LQ)")
    return 0


# ----------------------------------------------------------------------------------------- statistics
def luma(array_HWC: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 0-255 scale, float64."""
    return array_HWC.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def mean_gradient(y_HW: np.ndarray) -> float:
    """Mean magnitude of the forward-difference gradient (levels per pixel)."""
    gx, gy = np.diff(y_HW, axis=1)[:-1], np.diff(y_HW, axis=0)[:, :-1]
    return float(np.sqrt(gx**2 + gy**2).mean())


def flat_mask(y_HW: np.ndarray) -> np.ndarray:
    """The interior pixels ``(H-2, W-2)`` whose central-difference gradient is at most the median: the flatter half."""
    gx, gy = y_HW[1:-1, 2:] - y_HW[1:-1, :-2], y_HW[2:, 1:-1] - y_HW[:-2, 1:-1]
    magnitude = np.sqrt(gx**2 + gy**2)
    return magnitude <= np.median(magnitude)


def noise_sigma(y_HW: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Immerkaer's (1996) fast noise estimate: the mean |3x3 Laplacian-difference response| scaled to sigma.

    Edges and texture raise it too, so ``mask`` (``(H-2, W-2)``, e.g. :func:`flat_mask` of the clean image)
    keeps the flat pixels only, and it is read against the clean downscale's value on the same pixels.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    height, width = y_HW.shape
    response = sum(kernel[i, j] * y_HW[i : height - 2 + i, j : width - 2 + j] for i in range(3) for j in range(3))
    response = np.abs(response) if mask is None else np.abs(response[mask])
    return float(np.sqrt(np.pi / 2) * response.mean() / 6)


def lq_statistics(folder: Path, presets: list[str], seed: int) -> dict[str, tuple[float, ...]]:
    """Per LQ kind (the folder's own, each preset's of the same GTs, the GTs' clean box downscale) over the
    pairs: mean gradient, median of gradient / the clean downscale's, mean noise sigma on the clean
    downscale's flatter half, and mean colour shift (the largest per-channel difference of the mean level
    from the clean downscale's)."""
    lq_files, gt_files = by_stem(folder / "lq"), by_stem(folder / "gt")
    rows: dict[str, list[tuple[float, float, float]]] = {"real": [], "clean": [], **{p: [] for p in presets}}
    configs = {preset: resolve_degradation_config(preset) for preset in presets}
    for stem in sorted(set(lq_files) & set(gt_files)):
        gt = mod_crop(read_rgb(gt_files[stem]), SCALE)
        kinds = {"real": read_rgb(lq_files[stem]), "clean": box_downscale(gt, SCALE)}
        for preset in presets:
            generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{preset}:{stem}".encode()))
            kinds[preset] = to_uint8(degrade(to_tensor(gt), configs[preset], generator)[0])
        clean_colour = kinds["clean"].reshape(-1, 3).mean(axis=0)
        flat = flat_mask(luma(kinds["clean"]))
        for kind, lq in kinds.items():
            y = luma(lq)
            shift = np.abs(lq.reshape(-1, 3).mean(axis=0) - clean_colour).max()
            rows[kind].append((mean_gradient(y), noise_sigma(y, flat), float(shift)))
    out: dict[str, tuple[float, ...]] = {}
    clean = np.array([row[0] for row in rows["clean"]])
    for kind, values in rows.items():
        gradients, sigmas, shifts = (np.array(column) for column in zip(*values, strict=True))
        ratio = np.median(gradients / clean)  # the median: near-flat images would swamp a mean of ratios
        out[kind] = (float(gradients.mean()), float(ratio), float(sigmas.mean()), float(shifts.mean()))
    return out


def stats(folders: list[Path], presets: list[str], seed: int) -> int:
    print("| pairs | LQ | mean gradient | / clean's (median) | noise sigma, flat half | colour shift |")
    print("|---|---|---|---|---|---|")
    for folder in folders:
        count = len(set(by_stem(folder / "lq")) & set(by_stem(folder / "gt")))
        for kind, (gradient, ratio, sigma, shift) in lq_statistics(folder, presets, seed).items():
            label = {"real": "its own (real)", "clean": "GT box /4 (clean)"}.get(kind, f"`{kind}` of its GT")
            print(f"| {folder.name} ({count}) | {label} | {gradient:.2f} | {ratio:.3f} | {sigma:.2f} | {shift:.1f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("prepare", help="City100 hr/ + lr/ folders -> x4 lq/ + gt/ pairs")
    make.add_argument("sources", type=Path, nargs="+", help="folders holding hr/ and lr/ (same size, same stems)")
    make.add_argument("--out", type=Path, default=Path("local/data/city100_x4"))
    make.add_argument("--overwrite", action="store_true")
    measure = commands.add_parser("stats", help="LQ gradient and noise of lq/ + gt/ folders beside synthetic LQ")
    measure.add_argument("folders", type=Path, nargs="+", help="folders holding lq/ and gt/ (GT = 4x LQ)")
    measure.add_argument(
        "--presets", default="mild,realesrgan", help="presets or .toml/.json pipeline files, comma-separated"
    )
    measure.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return prepare(args.sources, args.out, args.overwrite)
    return stats(args.folders, [p.strip() for p in args.presets.split(",") if p.strip()], args.seed)


if __name__ == "__main__":
    sys.exit(main())
