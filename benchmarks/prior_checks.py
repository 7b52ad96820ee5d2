"""Does the student's transformer do the work? Bits per scale, and the restore pass cut stage by stage.

    python benchmarks/prior_checks.py --model default --pairs ../shared/data/real_pairs/drealsr \\
        --stems local/e/subset.txt --out local/prior_v2q

``--pairs DIR`` holds ``lq/`` and ``gt/`` (same stems, GT = scale x LQ). For the student (an embedded
name or a student folder) this writes, under ``--out``:

* ``bits.json`` / the first table of ``prior_checks.md``: per scale, the fraction of bits where the
  student's prediction equals the GT's (GT encoded by the student's encoder and quantiser), beside the
  fraction where the LQ's own bits already do (``varestorer.benchmark.prior_checks.bit_agreement``, over
  every non-overlapping LQ tile of the model's input size), and the student's flips of the LQ's bits split by
  its logit margin (how often its sure flips give the GT's bit, against its unsure ones: ``flips_over``);
* ``STAGE/STEM.png`` and the second table: each stage of ``StudentStage`` (precleaner, autoencoder,
  quantised, identity = the transformer replaced by the identity on tokens, full) restored through the
  same ``Restorer`` tiling as the shipped model, and scored by ``varestorer.metrics.evaluate``.

A stage folder that already holds every image is scored, not re-run (so ``full`` may be a symlink to the
model's restore outputs). Everything runs on the CPU in float32 unless ``--device``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from varestorer.benchmark.prior_checks import (
    ORACLE_ROWS_DOC,
    STAGES,
    StudentStage,
    aligned_tiles,
    bit_agreement,
    oracle_decodes,
)
from varestorer.data.transforms import to_tensor
from varestorer.inference.restorer import Restorer
from varestorer.io.atomic import atomic_path
from varestorer.io.images import list_images, read_rgb, write_image
from varestorer.metrics.evaluate import evaluate, write_json
from varestorer.models.student import Student


def bit_oracle(student: Student, pairs, device: str) -> dict:
    """Mean LPIPS-alex, DISTS and PSNR-Y (8 bit, no crop) of each oracle decode over every aligned tile."""
    from varestorer.metrics.dists import DISTS
    from varestorer.metrics.fidelity import psnr
    from varestorer.metrics.lpips import LPIPS

    lpips, dists = LPIPS(net="alex").to(device).eval(), DISTS().to(device).eval()
    tile, scale = student.input_size, student.scale
    sums: dict[str, list[float]] = {}
    tiles = 0
    with torch.no_grad():
        for lq, gt in pairs:
            for lq_tile, gt_tile in aligned_tiles(lq, gt, tile, scale):
                lq_t, gt_t = (to_tensor(tile_HWC)[None].to(device) for tile_HWC in (lq_tile, gt_tile))
                for name, image in oracle_decodes(student, lq_t, gt_t).items():
                    image8 = (image * 255).round().clamp(0, 255)
                    values = (
                        float(lpips(image8 / 127.5 - 1, gt_t * 2 - 1)),
                        float(dists(image8 / 255, gt_t)),
                        psnr(image8[0].permute(1, 2, 0).byte().cpu().numpy(), gt_tile, crop_border=0),
                    )
                    row = sums.setdefault(name, [0.0, 0.0, 0.0])
                    for i, value in enumerate(values):
                        row[i] += value
                tiles += 1
    means = {
        name: dict(zip(("lpips", "dists", "psnr_y"), (v / max(1, tiles) for v in row))) for name, row in sums.items()
    }
    return {"tiles": tiles, "decodes": means}


def oracle_markdown(oracle: dict) -> str:
    lines = ["| decode | LPIPS-alex | DISTS | PSNR-Y |", "|---|---|---|---|"]
    for name, row in oracle["decodes"].items():
        lines.append(f"| {name} | {row['lpips']:.4f} | {row['dists']:.4f} | {row['psnr_y']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="embedded student name or student folder")
    parser.add_argument("--pairs", required=True, help="folder with lq/ and gt/")
    parser.add_argument("--stems", help="a file of image names (one a line) to use; default all")
    parser.add_argument("--out", required=True)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {','.join(STAGES)}")
    parser.add_argument("--metrics", default="psnr,ssim,lpips,dists")
    parser.add_argument("--crop-border", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-bits", action="store_true", help="skip the bit agreement")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also the bit oracle: per tile, decodes with the GT's bits swapped in (LPIPS-alex, DISTS, PSNR-Y)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    pairs = Path(args.pairs)
    lq_paths = list_images([pairs / "lq"])
    if args.stems:
        wanted = {Path(line.strip()).stem for line in Path(args.stems).read_text().splitlines() if line.strip()}
        lq_paths = [path for path in lq_paths if path.stem in wanted]
    gt_by_stem = {path.stem: path for path in list_images([pairs / "gt"])}
    stages = [name.strip() for name in args.stages.split(",") if name.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}")
    student = Restorer.from_pretrained(args.model, device=args.device).model
    if not isinstance(student, Student):
        parser.error(f"{args.model} is a {type(student).__name__}, not a Student")
    student.eval()
    saved = out / "prior_checks.json"  # a run with fewer parts (--no-bits, --stages "") updates the others' file
    results: dict = json.loads(saved.read_text()) if saved.is_file() else {"stages": {}}
    results.update(model=args.model, images=[p.stem for p in lq_paths])
    md = [f"Model `{args.model}`, {len(lq_paths)} image pairs from `{pairs}`.", ""]
    if not args.no_bits:
        start = time.perf_counter()
        agreement = bit_agreement(student, ((read_rgb(p), read_rgb(gt_by_stem[p.stem])) for p in lq_paths))
        results["bits"] = {**agreement.to_json_dict(), "seconds": time.perf_counter() - start}
        md += [f"Bits per scale ({agreement.tiles} tiles of {student.input_size} LQ px):", "", agreement.to_markdown()]
        md.append("")
        print(agreement.to_markdown(), flush=True)
    if args.oracle:
        start = time.perf_counter()
        oracle = bit_oracle(student, ((read_rgb(p), read_rgb(gt_by_stem[p.stem])) for p in lq_paths), args.device)
        results["oracle"] = {**oracle, "seconds": time.perf_counter() - start}
        table = oracle_markdown(oracle)
        md += [
            f"Bit oracle over {oracle['tiles']} tiles of {student.input_size} LQ px. {ORACLE_ROWS_DOC}",
            "",
            table,
            "",
        ]
        print(table, flush=True)
    metrics = [name.strip() for name in args.metrics.split(",")]
    rows = []
    for stage in stages:
        folder = out / stage
        done = {p.stem for p in list_images([folder])} if folder.is_dir() else set()
        seconds = float("nan")
        if not {p.stem for p in lq_paths} <= done:
            restorer = Restorer(StudentStage(student, stage), device=args.device)  # type: ignore[arg-type]
            start = time.perf_counter()
            for path in lq_paths:
                if path.stem not in done:
                    write_image(folder / f"{path.stem}.png", restorer(read_rgb(path)), overwrite=True)
            seconds = (time.perf_counter() - start) / max(1, len(lq_paths) - len(done))
        subset = out / "_gt_subset"
        subset.mkdir(parents=True, exist_ok=True)
        for path in lq_paths:  # the GT of the chosen stems only, so evaluate pairs exactly these
            link = subset / gt_by_stem[path.stem].name
            if not link.exists():
                link.symlink_to(gt_by_stem[path.stem].resolve())
        report = evaluate(folder, subset, metrics, crop_border=args.crop_border)
        wanted = {p.stem for p in lq_paths}
        report.per_image = {stem: row for stem, row in report.per_image.items() if stem in wanted}
        report.problems = [p for p in report.problems if "no ground truth" not in p]
        for name in metrics:
            values = [row[name] for row in report.per_image.values() if name in row]
            report.mean[name] = sum(values) / len(values) if values else float("nan")
        write_json(report, out / f"{stage}.json", overwrite=True)
        results["stages"][stage] = {**report.mean, "images": report.count, "seconds_per_image": seconds}
        rows.append(f"| {stage} | " + " | ".join(f"{report.mean[m]:.4f}" for m in metrics) + " |")
        print(rows[-1], flush=True)
    if rows:
        md += ["| stage | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|", *rows, ""]
    with atomic_path(saved, overwrite=True) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_path(
        out / ("prior_checks.md" if rows else "bits.md" if not args.oracle else "oracle.md"), overwrite=True
    ) as tmp:
        tmp.write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
