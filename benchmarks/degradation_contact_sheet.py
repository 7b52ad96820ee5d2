"""Contact sheet of GT crops and their synthetic LQ for the ``mild`` and ``realesrgan`` presets.

Usage: python benchmarks/degradation_contact_sheet.py --images SET5_SET14_DIR [-o docs/degradation_contact_sheet.png]

Each row: GT center crop (192 px), then the 48 px LQ of each preset shown with nearest-neighbour x4
(pixels as the network sees them). Seeds are fixed, so the sheet is reproducible.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from varestorer.cli.degrade import image_seed  # noqa: E402
from varestorer.data.transforms import center_crop, to_tensor, to_uint8  # noqa: E402
from varestorer.degradation.pipeline import degrade  # noqa: E402
from varestorer.io.images import list_images, read_rgb, write_image  # noqa: E402

DEFAULT_NAMES = ("butterfly", "baby", "comic", "zebra", "flowers")


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (8 + 9 * len(text), 18), (0, 0, 0), -1)
    cv2.putText(tile, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder(s) with Set5/Set14 (searched recursively)")
    parser.add_argument("-o", "--output", default="docs/degradation_contact_sheet.png")
    parser.add_argument("--names", nargs="+", default=list(DEFAULT_NAMES), help="image stems, one row each")
    parser.add_argument("--size", type=int, default=192, help="GT crop side (multiple of 4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    by_stem = {p.stem: p for p in list_images([args.images], recursive=True)}
    presets = ("mild", "realesrgan")
    rows = []
    for name in args.names:
        gt = to_tensor(center_crop(read_rgb(by_stem[name]), args.size))
        tiles = [_label(to_uint8(gt), f"{name} GT {args.size}px")]
        for preset in presets:
            lq, params = degrade(gt, preset, torch.Generator().manual_seed(image_seed(args.seed, name)))
            shown = np.repeat(np.repeat(to_uint8(lq), 4, axis=0), 4, axis=1)
            final_q = params["final"]["jpeg_quality"]
            tiles.append(_label(shown, f"{preset} LQ x4 (JPEG q{final_q})"))
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    write_image(args.output, sheet, overwrite=True)
    print(f"wrote {args.output}: {sheet.shape[1]}x{sheet.shape[0]}, {Path(args.output).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
