"""recipes/prepare_city100.py: same-size LR/HR pairs -> x4 pairs that data/real_pairs.py reads; the statistics."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varestorer.data.real_pairs import RealPairDataset

_SPEC = importlib.util.spec_from_file_location(
    "prepare_city100", Path(__file__).resolve().parents[1] / "recipes" / "prepare_city100.py"
)
assert _SPEC and _SPEC.loader
prepare_city100 = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("prepare_city100", prepare_city100)
_SPEC.loader.exec_module(prepare_city100)


def _city(root: Path, stems: dict[str, int], height: int = 34, width: int = 42) -> Path:
    rng = np.random.default_rng(0)
    for stem in stems:
        for sub in ("hr", "lr"):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / sub / f"{stem}.png")
    return root


def test_prepare_writes_x4_pairs_the_training_set_reads(tmp_path, capsys) -> None:
    source = _city(tmp_path / "city100_nikon", {"004": 0, "012": 1})
    out = tmp_path / "x4"
    assert prepare_city100.main(["prepare", str(source), "--out", str(out)]) == 0
    assert "2 pairs" in capsys.readouterr().out
    gt = np.asarray(Image.open(out / "gt" / "city100_nikon_004.png"))
    lq = np.asarray(Image.open(out / "lq" / "city100_nikon_004.png"))
    hr = np.asarray(Image.open(source / "hr" / "004.png"))
    lr = np.asarray(Image.open(source / "lr" / "004.png")).astype(np.float64)
    assert gt.shape == (32, 40, 3) and lq.shape == (8, 10, 3)  # cut to a multiple of 4, then LQ = LR / 4
    assert np.array_equal(gt, hr[:32, :40])
    assert lq[1, 2, 0] == round(lr[4:8, 8:12, 0].mean())  # each LQ pixel: its 4x4 block's mean
    real = RealPairDataset(out, crop_size=16, seed=0)
    assert len(real) == 2 and real[0]["gt"].shape == (3, 16, 16)
    assert prepare_city100.main(["prepare", str(source), "--out", str(out)]) == 2  # not over a full folder


def test_prepare_refuses_unmatched_stems(tmp_path) -> None:
    source = _city(tmp_path / "city", {"001": 0})
    (source / "lr" / "001.png").rename(source / "lr" / "002.png")
    with pytest.raises(ValueError, match="same, non-empty set of stems"):
        prepare_city100.main(["prepare", str(source), "--out", str(tmp_path / "x4")])


def test_gradient_and_noise_measures() -> None:
    ramp = np.tile(np.arange(32, dtype=np.float64) * 2, (32, 1))
    assert prepare_city100.mean_gradient(ramp) == pytest.approx(2.0)
    noisy = 128 + np.random.default_rng(0).normal(0, 5, (128, 128))
    assert prepare_city100.noise_sigma(noisy) == pytest.approx(5, rel=0.05)
    assert prepare_city100.noise_sigma(ramp) == pytest.approx(0, abs=1e-9)  # a plane has no Laplacian
    clean = np.full((128, 128), 100.0)
    rng = np.random.default_rng(1)
    clean[:, 96:] += rng.uniform(0, 80, (128, 32))  # a strip of texture: edges everywhere
    image = clean + rng.normal(0, 5, clean.shape)
    assert prepare_city100.noise_sigma(image) > 8  # the texture reads as noise
    flat = prepare_city100.flat_mask(clean)
    assert prepare_city100.noise_sigma(image, flat) == pytest.approx(5, rel=0.05)  # the flat part only


def test_stats_table_puts_synthetic_lq_beside_the_real(tmp_path, capsys) -> None:
    source = _city(tmp_path / "city", {"001": 0}, height=64, width=64)
    out = tmp_path / "x4"
    prepare_city100.main(["prepare", str(source), "--out", str(out)])
    capsys.readouterr()
    torch.manual_seed(0)
    assert prepare_city100.main(["stats", str(out), "--presets", "bicubic"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 3  # header, rule, then real, clean and bicubic rows
    clean = next(line for line in lines if "GT box" in line)
    assert "| 1.000 |" in clean and "`bicubic` of its GT" in lines[-1]
