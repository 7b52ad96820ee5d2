"""Compare our per-image scores with someone else's: a pyiqa log (e.g. OSEDiff's) or an ``evaluate`` JSON.

A protocol check before quoting a table: score a peer's stored outputs with ``varestorer evaluate`` and
compare each image's values with the ones its authors logged. ``read_reference_scores(path)`` reads

* pyiqa-style logs (``inference_*.log`` / ``*_metrics.log``): one line per image holding
  ``NAME.ext | PSNR: 29.26; SSIM: 0.8923; LPIPS: 0.3200; ...`` (metric names are lower-cased), and
* this package's ``evaluate --json`` reports (``per_image``).

``compare_scores(ours, reference)`` gives, per metric both sides have, the number of images in common and
the largest and mean absolute difference (and which image has the largest).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

Scores = dict[str, dict[str, float]]
"""image stem -> metric name -> value"""

_IMAGE_FIELD = re.compile(r"(?:^|[\s/\\])([^\s/\\|]+)\.(?:png|jpe?g|bmp|tiff?|webp)\s*\|(.*)$", re.IGNORECASE)
_METRIC_FIELD = re.compile(r"([A-Za-z][\w-]*)\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def parse_pyiqa_log(text: str) -> Scores:
    """Per-image scores of a pyiqa-style log (lines ``.../STEM.png | NAME: value; NAME: value ...``).

    Fields after the image name that are not ``name: number`` (``Runtime: 0.41 sec`` is kept as a
    number and ignored by the comparison unless ours has a ``runtime`` metric) are skipped.
    """
    scores: Scores = {}
    for line in text.splitlines():
        match = _IMAGE_FIELD.search(line)
        if match is None:
            continue
        values = {name.lower(): float(value) for name, value in _METRIC_FIELD.findall(match.group(2))}
        if values:
            scores[match.group(1)] = values
    return scores


def read_reference_scores(path: str | Path) -> Scores:
    """Per-image scores from a pyiqa log or an ``evaluate --json`` report (chosen by content).

    Raises:
        FileNotFoundError: no such file.
        ValueError: neither format holds any per-image score.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    scores: Scores = {}
    if text.lstrip().startswith("{"):
        per_image = json.loads(text).get("per_image", {})
        scores = {
            stem: {k: float(v) for k, v in row.items() if v is not None}
            for stem, row in per_image.items()
            if isinstance(row, dict)
        }
    else:
        scores = parse_pyiqa_log(text)
    if not scores:
        raise ValueError(f"{path}: no per-image scores found (expected a pyiqa log or an evaluate --json report)")
    return scores


@dataclass(frozen=True)
class Agreement:
    """How one metric's per-image values agree between two score sets."""

    count: int
    """Images that both sides scored."""
    max_abs: float
    """Largest absolute difference."""
    mean_abs: float
    """Mean absolute difference."""
    worst: str
    """The image with the largest difference."""
    mean_ours: float
    """Our mean over the common images."""
    mean_reference: float
    """The reference's mean over the common images."""


def compare_scores(ours: Mapping[str, Mapping[str, float]], reference: Scores) -> dict[str, Agreement]:
    """Per metric present on both sides: agreement over the images both scored (finite values only)."""
    metrics = sorted({m for row in ours.values() for m in row} & {m for row in reference.values() for m in row})
    result: dict[str, Agreement] = {}
    for metric in metrics:
        pairs = [
            (stem, float(ours[stem][metric]), reference[stem][metric])
            for stem in sorted(set(ours) & set(reference))
            if metric in ours[stem] and metric in reference[stem]
            if math.isfinite(ours[stem][metric]) and math.isfinite(reference[stem][metric])
        ]
        if not pairs:
            continue
        differences = [abs(a - b) for _, a, b in pairs]
        worst = max(range(len(pairs)), key=differences.__getitem__)
        result[metric] = Agreement(
            count=len(pairs),
            max_abs=differences[worst],
            mean_abs=sum(differences) / len(pairs),
            worst=pairs[worst][0],
            mean_ours=sum(a for _, a, _ in pairs) / len(pairs),
            mean_reference=sum(b for _, _, b in pairs) / len(pairs),
        )
    return result


def agreement_to_json(agreement: Mapping[str, Agreement]) -> dict[str, dict]:
    return {metric: asdict(value) for metric, value in agreement.items()}


def format_agreement(agreement: Mapping[str, Agreement]) -> str:
    """A small text table: metric, images, max |diff|, mean |diff|, worst image, both means."""
    header = f"{'metric':<8} {'images':>6} {'max |diff|':>11} {'mean |diff|':>11} {'ours':>9} {'reference':>9}  worst"
    lines = [header, "-" * len(header)]
    for metric, a in agreement.items():
        lines.append(
            f"{metric:<8} {a.count:>6} {a.max_abs:>11.2e} {a.mean_abs:>11.2e} "
            f"{a.mean_ours:>9.4f} {a.mean_reference:>9.4f}  {a.worst}"
        )
    return "\n".join(lines)
