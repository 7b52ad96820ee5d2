"""The literal metric registry: name -> (scorer factory, needs ground truth, higher is better).

A factory takes ``MetricOptions`` and returns ``score(pred, gt) -> float`` on ``(H, W, 3)`` uint8 RGB
arrays (``gt`` is None for no-reference metrics). Factories build models once (LPIPS/DISTS weights
load from the asset cache), so ``evaluate`` can score a folder with one model instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Scorer = Callable[[np.ndarray, "np.ndarray | None"], float]


@dataclass(frozen=True)
class MetricOptions:
    crop_border: int = 0  # PSNR/SSIM only
    device: str = "cpu"
    protocol: Literal["basicsr", "pyiqa"] = "pyiqa"  # PSNR/SSIM only: see metrics/fidelity.py


@dataclass(frozen=True)
class MetricSpec:
    factory: Callable[[MetricOptions], Scorer]
    needs_gt: bool
    higher_is_better: bool
    description: str
    per_image: bool = True  # False: a folder-level metric (FID)


def _fidelity(name: str, y_channel: bool) -> Callable[[MetricOptions], Scorer]:
    def factory(options: MetricOptions) -> Scorer:
        from varestorer.metrics import fidelity

        function = getattr(fidelity, name)
        return lambda pred, gt: function(
            pred, gt, crop_border=options.crop_border, y_channel=y_channel, protocol=options.protocol
        )

    return factory


def _torch_pair(build: Callable[[], Any]) -> Callable[[MetricOptions], Scorer]:
    def factory(options: MetricOptions) -> Scorer:
        import torch

        model = build().to(options.device)

        def score(pred: np.ndarray, gt: np.ndarray | None) -> float:
            x, y = (
                torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)[None].float().div(255) for a in (pred, gt)
            )
            with torch.no_grad():
                return float(model(x.to(options.device), y.to(options.device))[0])

        return score

    return factory


def _lpips(net: Literal["vgg", "alex"]) -> Callable[[], object]:
    def build():
        from varestorer.metrics.lpips import LPIPS

        return LPIPS(net, normalize=True)

    return build


def _dists():
    from varestorer.metrics.dists import DISTS

    return DISTS()


def _niqe(options: MetricOptions) -> Scorer:
    from varestorer.metrics.niqe import load_pristine_model, niqe

    model = load_pristine_model()
    return lambda pred, gt: niqe(pred, model=model)


def _brisque(options: MetricOptions) -> Scorer:
    from varestorer.metrics.brisque import brisque, load_model

    model = load_model()
    return lambda pred, gt: brisque(pred, model=model)


def _pyiqa(name: str) -> Callable[[MetricOptions], Scorer]:
    def factory(options: MetricOptions) -> Scorer:
        from varestorer.metrics.adapters import pyiqa_metric

        function = pyiqa_metric(name, device=options.device)
        return lambda pred, gt: function(pred)

    return factory


def _folder_level(options: MetricOptions) -> Scorer:
    raise ValueError("FID is computed per folder, not per image")


METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec(_fidelity("psnr", True), True, True, "PSNR on BT.601 Y (dB), border-cropped"),
    "ssim": MetricSpec(_fidelity("ssim", True), True, True, "SSIM on BT.601 Y, border-cropped"),
    "psnr-rgb": MetricSpec(_fidelity("psnr", False), True, True, "PSNR on RGB (dB), border-cropped"),
    "ssim-rgb": MetricSpec(_fidelity("ssim", False), True, True, "SSIM, mean over RGB, border-cropped"),
    "lpips": MetricSpec(_torch_pair(_lpips("alex")), True, False, "LPIPS v0.1, AlexNet"),
    "lpips-vgg": MetricSpec(_torch_pair(_lpips("vgg")), True, False, "LPIPS v0.1, VGG16"),
    "dists": MetricSpec(_torch_pair(_dists), True, False, "DISTS (no resize)"),
    "niqe": MetricSpec(_niqe, False, False, "NIQE (LIVE model, rgb2gray luma)"),
    "brisque": MetricSpec(_brisque, False, False, "BRISQUE (OpenCV LIVE-R2 model)"),
    "musiq": MetricSpec(_pyiqa("musiq"), False, True, "MUSIQ-KonIQ (optional: pyiqa)"),
    "maniqa-pipal": MetricSpec(_pyiqa("maniqa-pipal"), False, True, "MANIQA PIPAL-trained (optional: pyiqa)"),
    "maniqa-koniq": MetricSpec(_pyiqa("maniqa-koniq"), False, True, "MANIQA KonIQ-trained (optional: pyiqa)"),
    "clipiqa": MetricSpec(_pyiqa("clipiqa"), False, True, "CLIP-IQA (optional: pyiqa)"),
    "fid": MetricSpec(_folder_level, True, False, "FID folder vs folder (optional: pyiqa)", per_image=False),
}
DEFAULT_FULL_REFERENCE = ("psnr", "ssim", "lpips", "dists", "niqe", "brisque")
DEFAULT_NO_REFERENCE = ("niqe", "brisque")


def parse_metrics(text: str | None, *, has_gt: bool) -> list[str]:
    """Comma-separated names -> validated list; defaults depend on whether ground truth is given."""
    if not text:
        return list(DEFAULT_FULL_REFERENCE if has_gt else DEFAULT_NO_REFERENCE)
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from: {', '.join(METRICS)}")
    needing = [name for name in names if METRICS[name].needs_gt]
    if needing and not has_gt:
        raise ValueError(f"{', '.join(needing)} need ground truth (--gt DIR); without it use no-reference metrics")
    return list(dict.fromkeys(names))
