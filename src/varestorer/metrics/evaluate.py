"""Score a folder of restored images, optionally against a folder of ground truths paired by file stem.

``evaluate(pred_dir, gt_dir, metrics)`` never stops at a bad file: unreadable images, size mismatches,
duplicate stems and unpaired files are listed in ``EvalReport.problems`` and the rest is still scored.
A metric that cannot score one image (NIQE on an image under two 96x96 blocks) leaves only that metric
out for that image: its mean is over the images it scored (``EvalReport.counts``), the others keep it.
Reports are written atomically as JSON ``{"mean", "per_image", "count", "counts", ...}`` or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from varestorer.io.atomic import atomic_path
from varestorer.io.images import ImageReadError, list_images, read_rgb
from varestorer.metrics.registry import METRICS, MetricOptions

if TYPE_CHECKING:
    from varestorer.metrics.fidelity import Protocol


@dataclass
class EvalReport:
    metrics: list[str]
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.per_image)

    @property
    def counts(self) -> dict[str, int]:
        """Images each per-image metric scored (fewer than ``count`` where it could not score some)."""
        rows = self.per_image.values()
        return {name: sum(name in row for row in rows) for name in self.metrics if METRICS[name].per_image}

    def to_json_dict(self) -> dict:
        """JSON-safe dict; non-finite values (PSNR of identical images) become null."""

        def clean(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "mean": {k: clean(v) for k, v in self.mean.items()},
            "per_image": {stem: {k: clean(v) for k, v in row.items()} for stem, row in self.per_image.items()},
            "count": self.count,
            "counts": self.counts,
            "metrics": {
                name: {"higher_is_better": METRICS[name].higher_is_better, "description": METRICS[name].description}
                for name in self.metrics
            },
            "settings": self.settings,
            "problems": self.problems,
        }


def _index_by_stem(folder: Path, role: str, problems: list[str]) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{role} folder not found: {folder}")
    by_stem: dict[str, Path] = {}
    for path in list_images([folder]):
        if path.stem in by_stem:
            problems.append(f"{path}: duplicate {role} stem {path.stem!r} (also {by_stem[path.stem].name}); skipped")
            continue
        by_stem[path.stem] = path
    return by_stem


def evaluate(
    pred_dir: str | Path,
    gt_dir: str | Path | None = None,
    metrics: Sequence[str] = ("niqe", "brisque"),
    *,
    crop_border: int = 0,
    device: str = "cpu",
    protocol: Protocol = "pyiqa",
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Score every prediction; full-reference metrics need ``gt_dir``.

    ``protocol`` is PSNR/SSIM's (``metrics/fidelity.py``): ``"pyiqa"``, the real-world SR papers' (OSEDiff's
    logged scores reproduce to 1e-5), or ``"basicsr"`` (float Y, unclipped SSIM; this package's tables before).

    Raises:
        FileNotFoundError: a folder does not exist. Metric/asset errors (e.g. ``AssetMissingError``)
        propagate before any image is scored.
    """
    settings = {"crop_border": crop_border, "y_channel": "BT.601 YCbCr", "protocol": protocol}
    report = EvalReport(list(metrics), settings=settings)
    pred = _index_by_stem(Path(pred_dir), "prediction", report.problems)
    gt = _index_by_stem(Path(gt_dir), "ground-truth", report.problems) if gt_dir is not None else None
    if not pred:
        raise FileNotFoundError(f"no images in {pred_dir}")
    options = MetricOptions(crop_border=crop_border, device=device, protocol=protocol)
    per_image = [name for name in metrics if METRICS[name].per_image]
    scorers = {name: METRICS[name].factory(options) for name in per_image}  # load all models up front
    if gt is not None:
        for stem in sorted(set(gt) - set(pred)):
            report.problems.append(f"{gt[stem]}: no prediction with stem {stem!r}")
    for stem in sorted(pred):
        if progress:
            progress(stem)
        if gt is not None and stem not in gt:
            report.problems.append(f"{pred[stem]}: no ground truth with stem {stem!r}")
            continue
        try:
            image = read_rgb(pred[stem])
            reference = read_rgb(gt[stem]) if gt is not None else None
        except ImageReadError as error:
            report.problems.append(str(error))
            continue
        if reference is not None and reference.shape != image.shape:
            h, w = image.shape[:2]
            gh, gw = reference.shape[:2]
            report.problems.append(f"{pred[stem]}: size {w}x{h} differs from ground truth {gw}x{gh}; skipped")
            continue
        row: dict[str, float] = {}
        for name, scorer in scorers.items():
            try:
                row[name] = float(scorer(image, reference))
            except ValueError as error:  # e.g. an image too small for NIQE's 96x96 blocks: the others still score
                report.problems.append(f"{pred[stem]}: {name} not scored: {error}")
        if row:
            report.per_image[stem] = row
    if "fid" in metrics and gt_dir is not None:
        from varestorer.metrics.adapters import fid

        report.mean["fid"] = fid(pred_dir, gt_dir, device=device)
    for name in per_image:
        values = [row[name] for row in report.per_image.values() if name in row]
        report.mean[name] = float(np.mean(values)) if values else float("nan")
    return report


def format_table(report: EvalReport, *, per_image: bool = True) -> str:
    """A fixed-width text table: one row per image (optional) and the mean."""
    names = [name for name in report.metrics if name in report.mean]
    arrows = {name: "↑" if METRICS[name].higher_is_better else "↓" for name in names}
    width = max([len("mean"), *(len(stem) for stem in report.per_image)])
    header = f"{'image':<{width}}  " + "  ".join(f"{name + arrows[name]:>10}" for name in names)
    lines = [header, "-" * len(header)]
    rows = list(report.per_image.items()) if per_image else []
    for stem, row in rows:
        lines.append(f"{stem:<{width}}  " + "  ".join(_cell(row, name) for name in names))
    if rows:
        lines.append("-" * len(header))
    lines.append(f"{'mean':<{width}}  " + "  ".join(f"{report.mean[name]:>10.4f}" for name in names))
    lines.append(f"{report.count} image(s)")
    counts = report.counts
    partial = [f"{name} over {counts[name]}" for name in names if counts.get(name, report.count) < report.count]
    if partial:
        lines[-1] += f" ({', '.join(partial)}: see the problems)"
    return "\n".join(lines)


def _cell(row: dict[str, float], name: str) -> str:
    return f"{row[name]:>10.4f}" if name in row else f"{'-':>10}"


def write_json(report: EvalReport, path: str | Path, *, overwrite: bool = False) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(report.to_json_dict(), indent=2) + "\n", encoding="utf-8")


def write_csv(report: EvalReport, path: str | Path, *, overwrite: bool = False) -> None:
    names = [name for name in report.metrics if name in report.mean]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", *names])
    for stem, row in report.per_image.items():
        writer.writerow([stem, *(f"{row[name]:.6f}" if name in row else "" for name in names)])
    writer.writerow(["mean", *(f"{report.mean[name]:.6f}" for name in names)])
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
