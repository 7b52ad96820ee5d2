"""Quality table and contact sheet: our model vs bicubic vs Real-ESRGAN on paired LQ/GT folders.

    python benchmarks/quality_table.py --set mild=DATA/val_mild --set realesrgan=DATA/val_realesrgan \
        --method ours=default --method bicubic --method realesrgan-x4plus \
        --out docs/quality --sheet docs/default_model_contact_sheet.png

Each ``--set NAME=DIR`` holds ``lq/`` and ``gt/`` (as written by ``varestorer degrade``; the DRealSR
pairs have the same layout). Each method runs through the CLI (``varestorer restore --model M`` for
``label=MODEL``, M an embedded name or a model folder; ``varestorer baseline`` for peers), timed per
image, then ``varestorer.metrics.evaluate`` scores it. ``--stored LABEL=DIR`` adds a method whose outputs
already exist (a paper's released results, e.g. OSEDiff's): scored, never run. Writes
``OUT/results.json``, ``OUT/results.md`` (one table per set) and each method's per-image report
``OUT/SET/LABEL.json``.

The real camera pairs (docs/default_model.md, "Real camera pairs (DRealSR)"), pyiqa's protocol, no crop:

    python benchmarks/quality_table.py --set drealsr=../shared/data/real_pairs/drealsr --crop-border 0 \
        --metrics psnr,ssim,lpips,dists,niqe --method bicubic --method realesr-general-x4v3 \
        --method realesrgan-x4plus --stored osediff=../shared/data/real_pairs/drealsr/peer_osediff \
        --method v2Q=default --method v2L=v2l --out local/drealsr
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
from varestorer.metrics.evaluate import evaluate, write_json
from varestorer.metrics.registry import parse_metrics

PEERS = ("bicubic", "lanczos", "realesrgan-x4plus", "realesr-general-x4v3")
DEFAULT_METRICS = "psnr,ssim,lpips,dists,niqe,brisque"


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
    parser.add_argument("--method", action="append", default=[], help="peer name, or LABEL=MODEL for restore")
    parser.add_argument(
        "--stored",
        action="append",
        default=[],
        help="LABEL=DIR: outputs that already exist (per set: DIR/SET when that folder exists, else DIR), scored only",
    )
    parser.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated (default {DEFAULT_METRICS})")
    parser.add_argument("--crop-border", type=int, default=None, help="PSNR/SSIM border crop (default: --scale)")
    parser.add_argument("--protocol", choices=("pyiqa", "basicsr"), default="pyiqa", help="PSNR/SSIM protocol")
    parser.add_argument("--out", required=True, help="folder for outputs, results.json and results.md")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--sheet", default=None, help="contact sheet PNG (first set, up to 5 images)")
    parser.add_argument("--restore-arg", action="append", default=[], help="extra argument for 'restore'")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        help="LABEL whose outputs already exist in OUT/SET/LABEL (not re-run; its scores and time are taken "
        "from OUT/SET/LABEL.json or OUT/results.json when they hold them, else re-scored and not timed)",
    )
    args = parser.parse_args()
    if not args.method and not args.stored:
        parser.error("give at least one --method or --stored")
    metrics = parse_metrics(args.metrics, has_gt=True)
    crop = args.scale if args.crop_border is None else args.crop_border
    out = Path(args.out)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for item in args.set:
        set_name, folder = item.split("=", 1)
        lq_dir, gt_dir = Path(folder) / "lq", Path(folder) / "gt"
        results[set_name] = {}
        methods = [(m.partition("=")[0], m.partition("=")[2] or m, None) for m in args.method]
        for item in args.stored:
            label, _, folder = item.partition("=")
            stored = Path(folder) / set_name if (Path(folder) / set_name).is_dir() else Path(folder)
            methods.append((label, "", stored))
        for label, spec, stored in methods:
            pred_dir = stored or out / set_name / label
            extra = args.restore_arg if spec not in PEERS else []
            saved = out / set_name / f"{label}.json"
            if label in args.reuse and saved.is_file():  # this script's own per-method report
                report_json = json.loads(saved.read_text())
                results[set_name][label] = {
                    **{k: float("nan") if v is None else v for k, v in report_json["mean"].items()},
                    "seconds_per_image": report_json["settings"].get("seconds_per_image", float("nan")),
                    "images": report_json["count"],
                }
            elif label in args.reuse and label in previous.get(set_name, {}):
                results[set_name][label] = previous[set_name][label]
            else:
                seconds = float("nan")
                if label not in args.reuse and stored is None:
                    seconds = run_method(label, spec, lq_dir, pred_dir, args.scale, extra)
                report = evaluate(pred_dir, gt_dir, metrics, crop_border=crop, protocol=args.protocol)
                if report.problems:
                    print(f"{set_name}/{label}: {len(report.problems)} problem(s), e.g. {report.problems[0]}")
                report.settings["seconds_per_image"] = seconds
                write_json(report, saved, overwrite=True)
                results[set_name][label] = {**report.mean, "seconds_per_image": seconds, "images": report.count}
            print(
                f"{set_name:12s} {label:20s} " + " ".join(f"{k}={v:.4f}" for k, v in results[set_name][label].items())
            )
        if args.sheet and set_name == args.set[0].split("=", 1)[0]:
            stems = [p.stem for p in list_images([gt_dir])][:5]
            columns = [("LQ", lq_dir)] + [(label, stored or out / set_name / label) for label, _, stored in methods]
            contact_sheet(stems, [*columns, ("GT", gt_dir)], Path(args.sheet))
    lines = []
    for set_name, table in results.items():
        lines += [
            f"### {set_name}",
            "",
            "| method | " + " | ".join(metrics) + " | s/image |",
            "|---" * (len(metrics) + 2) + "|",
        ]
        for label, row in table.items():
            seconds = row.get("seconds_per_image", float("nan"))
            cells = " | ".join(f"{row[m]:.4f}" if m in row else "-" for m in metrics)
            lines.append(f"| {label} | {cells} | " + ("-" if seconds != seconds else f"{seconds:.2f}") + " |")
        lines.append("")
    settings = {"metrics": metrics, "crop_border": crop, "protocol": args.protocol, "scale": args.scale}
    with atomic_path(out / "results.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps({**results, "_settings": settings}, indent=2))
    with atomic_path(out / "results.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
