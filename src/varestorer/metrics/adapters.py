"""Optional adapters for metrics whose weights we cannot ship: MUSIQ, MANIQA, CLIP-IQA (pyiqa) and FID.

Nothing here is a dependency: each adapter imports its library when first used and raises one clear
``MissingOptionalMetricError`` error naming what to install when it is absent. Their weights are downloaded
by those libraries (HuggingFace / GitHub), so they need network access once. Variants are explicit:
``maniqa-pipal`` (PIPAL-trained, used by OSEDiff) and ``maniqa-koniq`` (pyiqa's ``maniqa``, used by
VARSR) are different models and their numbers are not comparable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

# our name -> pyiqa model name
PYIQA_NAMES = {
    "musiq": "musiq",  # KonIQ checkpoint
    "maniqa-pipal": "maniqa-pipal",
    "maniqa-koniq": "maniqa",
    "clipiqa": "clipiqa",
}


class MissingOptionalMetricError(ImportError):
    """An optional metric's library is not installed."""


def _import(module: str, metric: str, install: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingOptionalMetricError(
            f"metric {metric!r} needs the optional package {module!r} ({error}); "
            f"install it with `pip install {install}` (it downloads its own weights on first use)"
        ) from None


def pyiqa_metric(name: str, *, device: str = "cpu") -> Callable[[np.ndarray], float]:
    """A no-reference pyiqa metric as ``f(rgb_uint8_HW3) -> float``."""
    if name not in PYIQA_NAMES:
        raise ValueError(f"unknown pyiqa adapter {name!r}; choose from: {', '.join(PYIQA_NAMES)}")
    pyiqa = _import("pyiqa", name, "pyiqa")
    import torch

    model = pyiqa.create_metric(PYIQA_NAMES[name], device=device, as_loss=False)

    def score(image: np.ndarray) -> float:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div(255).to(device)
        with torch.no_grad():
            return float(model(x).reshape(-1)[0])

    return score


def fid(pred_dir: str | Path, gt_dir: str | Path, *, device: str = "cpu") -> float:
    """Folder-to-folder FID (clean-fid "clean" mode through pyiqa, as OSEDiff/VARSR report it)."""
    pyiqa = _import("pyiqa", "fid", "pyiqa")
    model = pyiqa.create_metric("fid", device=device)
    return float(model(str(pred_dir), str(gt_dir)))
