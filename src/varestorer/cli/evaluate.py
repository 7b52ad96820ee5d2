"""``varestorer evaluate``: PSNR/SSIM/LPIPS/DISTS/NIQE/BRISQUE of a folder of results, paired by file stem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="folder of restored images")
    parser.add_argument("--gt", help="folder of ground-truth images (same stems); omit for no-reference metrics")
    parser.add_argument(
        "--metrics",
        help="comma-separated (default with --gt: psnr,ssim,lpips,dists,niqe,brisque; without: niqe,brisque); "
        "also psnr-rgb, ssim-rgb, lpips-vgg and the optional musiq, maniqa-pipal, maniqa-koniq, clipiqa, fid",
    )
    parser.add_argument("--scale", type=int, default=4, help="SR factor; the default border crop (default 4)")
    parser.add_argument("--crop-border", type=int, help="pixels cropped on each side for PSNR/SSIM (default: --scale)")
    parser.add_argument(
        "--protocol",
        choices=("pyiqa", "basicsr"),
        default="pyiqa",
        help="PSNR/SSIM details: pyiqa (the real-world SR papers' tables: SSIM on integer Y with its structure "
        "term clipped at 0, PSNR with MSE + 1e-8) or basicsr (float Y, unclipped; the tables in docs "
        "before the DRealSR section); default pyiqa",
    )
    parser.add_argument(
        "--reference",
        help="a pyiqa log or an evaluate --json report of the same images: print how far each metric is from it "
        "per image (max and mean |difference|), and store that in --json",
    )
    parser.add_argument("--json", help="write the report as JSON here")
    parser.add_argument("--csv", help="write per-image values and the mean as CSV here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --json/--csv files")
    parser.add_argument("--device", default="cpu", help="torch device for LPIPS/DISTS (default cpu)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the mean row (no progress)")


def run(args: argparse.Namespace) -> int:
    from varestorer.inference.devices import check_device
    from varestorer.io.images import list_images
    from varestorer.metrics.evaluate import evaluate, format_table, write_csv, write_json
    from varestorer.metrics.registry import parse_metrics

    metrics = parse_metrics(args.metrics, has_gt=args.gt is not None)
    check_device(args.device)
    crop = args.scale if args.crop_border is None else args.crop_border
    if crop < 0:
        raise ValueError(f"--crop-border must be >= 0, got {crop}")
    reference = None
    if args.reference:
        from varestorer.metrics.reference_scores import read_reference_scores

        reference = read_reference_scores(args.reference)  # fail before scoring, not after
    for option in (args.json, args.csv):
        if option and Path(option).exists() and not args.overwrite:
            raise FileExistsError(f"{option} exists; pass --overwrite to replace it")
    from varestorer.cli._progress import Progress

    total = len(list_images([args.pred])) if Path(args.pred).is_dir() else 0

    def next_image(stem: str) -> None:
        if progress.index:
            progress.finish("scored")
        progress.start(stem)

    with Progress(total, desc="evaluate", quiet=args.quiet) as progress:
        report = evaluate(
            args.pred,
            args.gt,
            metrics,
            crop_border=crop,
            device=args.device,
            protocol=args.protocol,
            progress=next_image,
        )
        if progress.index:
            progress.finish("scored")
    print(format_table(report, per_image=not args.quiet))
    if reference is not None:
        from varestorer.metrics.reference_scores import agreement_to_json, compare_scores, format_agreement

        agreement = compare_scores(report.per_image, reference)
        print(f"\nper-image agreement with {args.reference}:")
        print(format_agreement(agreement) if agreement else "no metric and image in common")
        report.settings["reference"] = {"path": str(args.reference), "agreement": agreement_to_json(agreement)}
    if args.json:
        write_json(report, args.json, overwrite=args.overwrite)
    if args.csv:
        write_csv(report, args.csv, overwrite=args.overwrite)
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)
    if report.problems:
        print(f"{len(report.problems)} problem(s); {report.count} image(s) scored", file=sys.stderr)
    return 1 if report.problems or report.count == 0 else 0
