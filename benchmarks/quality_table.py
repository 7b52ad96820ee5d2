"""Quality table and contact sheet: our model vs bicubic vs Real-ESRGAN on paired LQ/GT folders.

    python benchmarks/quality_table.py --set mild=DATA/val_mild --set realesrgan=DATA/val_realesrgan \
        --method ours=default --method bicubic --method realesrgan-x4plus \
        --out docs/quality --sheet docs/default_model_contact_sheet.png

Each ``--set NAME=DIR`` holds ``lq/`` and ``gt/`` (as written by ``varestorer degrade``). Each method
runs through the CLI (``varestorer restore --model M`` for ``label=MODEL``; ``varestorer baseline`` for
peers), timed per image, then ``varestorer.metrics.evaluate`` scores it. Writes ``OUT/results.json`` and
``OUT/results.md`` (one table per set).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from varestorer.io.atomic import atomic_path
from varestorer.io.images import list_images, read_rgb
from varestorer.metrics.evaluate import evaluate

PEERS = ("bicubic", "lanczos", "realesrgan-x4plus", "realesr-general-x4v3")
METRICS = ("psnr", "ssim", "lpips", "dists", "niqe", "brisque")


def run_method(label: str, spec: str, lq_dir: Path, out_dir: Path, scale: int, extra: list[str]) -> float:
    """Restore every LQ image; returns seconds per image (wall clock, whole command)."""
    if spec in PEERS:
        command = ["baseline", "--method", spec]
    else:
        command = ["restore", "--model", spec]
    args = [sys.executable, "-m", "varestorer", *command, str(lq_dir), "-o", str(out_dir), "--scale", str(scale)]
    start = time.perf_counter()
    subprocess.run([*args, "--overwrite", *extra], check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) / max(1, len(list_images([lq_dir])))


def contact_sheet(rows: list[str], columns: list[tuple[str, Path]], path: Path, crop: int = 192) -> None:
    """One row per image stem: a centre crop of each column's image (LQ upscaled by nearest)."""
    tiles = []
    for stem in rows:
        row = []
        gt = read_rgb(next(columns[-1][1].glob(f"{stem}.*")))
        h, w = gt.shape[:2]
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        for _, folder in columns:
            image = read_rgb(next(folder.glob(f"{stem}.*")))
            if image.shape[:2] != gt.shape[:2]:
                image = np.asarray(Image.fromarray(image).resize((w, h), Image.NEAREST))
            row.append(image[top : top + crop, left : left + crop])
        tiles.append(np.concatenate(row, axis=1))
    sheet = np.concatenate(tiles, axis=0)
    with atomic_path(path, overwrite=True) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG", optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", required=True, help="NAME=DIR with lq/ and gt/")
    parser.add_argument("--method", action="append", required=True, help="peer name, or LABEL=MODEL for restore")
    parser.add_argument("--out", required=True, help="folder for outputs, results.json and results.md")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--sheet", default=None, help="contact sheet PNG (first set, up to 5 images)")
    parser.add_argument("--restore-arg", action="append", default=[], help="extra argument for 'restore'")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        help="LABEL whose outputs already exist in OUT/SET/LABEL (not re-run; its scores and time are taken "
        "from OUT/results.json when that holds them, else re-scored and not timed)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for item in args.set:
        set_name, folder = item.split("=", 1)
        lq_dir, gt_dir = Path(folder) / "lq", Path(folder) / "gt"
        results[set_name] = {}
        for method in args.method:
            label, _, spec = method.partition("=")
            spec = spec or label
            pred_dir = out / set_name / label
            extra = args.restore_arg if spec not in PEERS else []
            if label in args.reuse and label in previous.get(set_name, {}):
                results[set_name][label] = previous[set_name][label]
            else:
                seconds = float("nan")
                if label not in args.reuse:
                    seconds = run_method(label, spec, lq_dir, pred_dir, args.scale, extra)
                report = evaluate(pred_dir, gt_dir, METRICS, crop_border=args.scale)
                results[set_name][label] = {**report.mean, "seconds_per_image": seconds}
            print(
                f"{set_name:12s} {label:20s} " + " ".join(f"{k}={v:.4f}" for k, v in results[set_name][label].items())
            )
        if args.sheet and set_name == args.set[0].split("=", 1)[0]:
            stems = [p.stem for p in list_images([gt_dir])][:5]
            columns = [("LQ", lq_dir)] + [
                (m.partition("=")[0], out / set_name / m.partition("=")[0]) for m in args.method
            ]
            contact_sheet(stems, [*columns, ("GT", gt_dir)], Path(args.sheet))
    lines = []
    for set_name, table in results.items():
        lines += [
            f"### {set_name}",
            "",
            "| method | " + " | ".join(METRICS) + " | s/image |",
            "|---" * (len(METRICS) + 2) + "|",
        ]
        for label, row in table.items():
            lines.append(
                f"| {label} | " + " | ".join(f"{row[m]:.4f}" for m in METRICS) + f" | {row['seconds_per_image']:.2f} |"
            )
        lines.append("")
    with atomic_path(out / "results.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    with atomic_path(out / "results.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
