"""recipes/train_default_v3p_gpu.sh end to end on the CPU at a tiny budget (slow tier): the prepare step, then
the device call's command, on photos, validation images, one pair and random-weight LPIPS/DISTS assets of the
test's own; the recipes and the embedded v2Q/tokenizer it starts from are the real ones."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import write_fake_perceptual_assets
from varestorer.assets.cache import asset_path
from varestorer.io.images import write_image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "recipes" / "train_default_v3p_gpu.sh"
SCALES = ["1x1", "2x2", "4x4", "8x8", "16x16", "32x32"]  # recipes/teacher_default.toml at 256 px


def _recipe_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


carry_assets = _recipe_module("carry_assets")
gpu_run_summary = _recipe_module("gpu_run_summary")


def test_carried_assets_unpack_within_half_a_step_and_verify(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    monkeypatch.setattr(carry_assets, "INT8_MIN_ELEMENTS", 4096)  # VGG16's 1M and 65,536, scaled down
    monkeypatch.setattr(carry_assets, "FLOAT16_MIN_ELEMENTS", 256)
    state = {"big": torch.randn(64, 72), "mid": torch.randn(20, 20), "small": torch.randn(10, 10)}
    (tmp_path / "cache" / "assets").mkdir(parents=True)
    save_file(state, str(tmp_path / "cache" / "assets" / "a.safetensors"))
    (tmp_path / "cache" / "assets" / "a.json").write_text(json.dumps({"name": "a", "license": "x"}))
    monkeypatch.setenv("VARESTORER_CACHE", str(tmp_path / "cache"))
    carry_assets.main(["pack", "a", "-o", str(tmp_path / "packed")])
    packed = load_file(str(tmp_path / "packed" / "a.safetensors"))
    dtypes = (packed["big"].dtype, packed["mid"].dtype, packed["small"].dtype)
    assert dtypes == (torch.int8, torch.float16, torch.float32)
    carry_assets.main(["unpack", str(tmp_path / "packed"), "-o", str(tmp_path / "device" / "assets")])
    path = asset_path("a", verify=True, root=tmp_path / "device" / "assets")  # the manifest's sha256 is the new file's
    unpacked = load_file(str(path))
    assert all(tensor.dtype == torch.float32 for tensor in unpacked.values())
    step = state["big"].abs().amax(dim=1, keepdim=True) / 127
    assert bool(((unpacked["big"] - state["big"]).abs() <= step / 2 + 1e-7).all())
    assert not torch.equal(unpacked["big"], state["big"])
    assert torch.equal(unpacked["mid"], state["mid"].half().float()) and torch.equal(unpacked["small"], state["small"])
    assert json.loads((tmp_path / "device" / "assets" / "a.json").read_text())["license"] == "x"


def test_summary_reads_per_scale_accuracy_and_gains_from_the_logs(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher.log"
    teacher.write_text(
        "INFO varestorer.training.trainer: step 25 train bit_accuracy=0.6 loss=0.6\n"
        "INFO varestorer.training.trainer: step 50 val loss=0.5 bit_accuracy=0.7 bit_accuracy_2x2=0.8 "
        "bit_accuracy_1x1=0.9 bit_accuracy_16x16=0.65\n"
        "a line that is not a log line, step 3\n"
    )
    bits = tmp_path / "bits.log"
    bits.write_text(
        "".join(
            f"INFO x: step {s} train bit_gain_1x1={g} bit_gain_2x2=0.0 loss=1\n"
            for s, g in ((1, 0.5), (2, 0.1), (3, 0.3))
        )
    )
    out = tmp_path / "summary.json"
    stages = ["--stage", f"teacher={teacher}:0:12", "--stage", f"bits={bits}:1:3", "--stage", "student=nope.log:124:9"]
    gpu_run_summary.main([*stages, "--last", "2", "--extra", "precision=bf16", "-o", str(out)])
    summary = json.loads(out.read_text())
    assert summary["teacher_val_bit_accuracy_per_scale"] == {"1x1": 0.9, "2x2": 0.8, "16x16": 0.65}
    assert summary["stages"]["teacher"]["steps"] == 25 and summary["stages"]["teacher"]["seconds"] == 12
    assert summary["stages"]["bits"]["bit_gain_per_scale"] == pytest.approx({"1x1": 0.2, "2x2": 0.0})
    assert summary["stages"]["bits"]["exit"] == 1 and summary["stages"]["student"] == {
        "exit": 124,
        "seconds": 9.0,
        "log": "nope.log",
    }
    assert summary["precision"] == "bf16"


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients with a few edges and some noise: (H, W, 3) uint8."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(rng.uniform(2, 9) * x + rng.uniform(2, 9) * y + rng.uniform(0, 6)) for _ in range(3)]
    image = 0.5 + 0.35 * np.stack(channels, axis=-1)
    image[(x * rng.uniform(3, 8)).astype(int) % 2 == 1] *= 0.7
    return np.clip((image + rng.normal(0, 0.02, image.shape)) * 255, 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_the_v3p_gpu_script_trains_exports_and_summarises_on_the_cpu(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for index in range(3):
        write_image(tmp_path / "photos" / f"p{index}.png", _photo(rng, 288, 320))
    for index in range(2):
        write_image(tmp_path / "val" / f"v{index}.png", _photo(rng, 256, 256))
    gt = _photo(rng, 256, 256)
    write_image(tmp_path / "pairs" / "gt" / "pair0.png", gt)
    write_image(tmp_path / "pairs" / "lq" / "pair0.png", gt[::4, ::4].copy())
    write_fake_perceptual_assets(tmp_path / "cache")
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "VARESTORER_CACHE": str(tmp_path / "cache"),
        "CARRY": str(tmp_path / "carry"),
        "RUNS": str(tmp_path / "runs"),
        "TRAIN_SOURCES": str(tmp_path / "photos"),
        "VAL_SOURCE": str(tmp_path / "val"),
        "PAIRS_SOURCE": str(tmp_path / "pairs"),
        "PAIR_STEMS": "pair0",
    }
    prepared = subprocess.run(["bash", str(SCRIPT), "prepare"], env=env, capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    carried = load_file(str(tmp_path / "carry" / "assets" / "vgg16-imagenet.safetensors"))
    assert carried["conv12.weight"].dtype == torch.int8 and carried["conv4.weight"].dtype == torch.float16
    assert sorted(p.name for p in (tmp_path / "carry" / "data" / "train" / "photos").iterdir()) == [
        "p0.webp",
        "p1.webp",
        "p2.webp",
    ]
    assert "of 64 MiB" in prepared.stdout

    tiny = {
        "MAX_STEPS": "2",
        "TEACHER_BATCH": "2",
        "BITS_BATCH": "1",
        "STUDENT_BATCH": "1",
        "WORKERS": "0",
        "PRECISION": "no",
        "VAL_IMAGES": "1",
        "IMAGE_LOSS_CROP": "64",
        "DEVICE": "cpu",
        "PRIOR_CHECKS_UNTIL_S": "100000",
        "DEADLINE_S": "100000",
        "PRIOR_STAGES": "identity,full",
        "TEACHER_SETS": "loss.num_samples=1 train.log_every=1",
        "BITS_SETS": "train.log_every=1",
        "STUDENT_SETS": "train.log_every=1",
        "CAMERA_SETS": "train.log_every=1",
    }
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out)], env={**env, **tiny}, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    assert {name: stage["exit"] for name, stage in summary["stages"].items()} == dict.fromkeys(
        ("teacher", "bits", "student", "camera", "export", "prior_checks"),
        0,  # stages 2 and 3: v3T's image stage and v3M's camera stage, on by default
    )
    accuracy = summary["teacher_val_bit_accuracy_per_scale"]
    assert list(accuracy) == SCALES and all(0.0 <= value <= 1.0 for value in accuracy.values())
    assert summary["stages"]["teacher"]["steps"] == 2
    gains = summary["stages"]["bits"]["bit_gain_per_scale"]
    assert list(gains) == SCALES and all(-1.0 <= value <= 1.0 for value in gains.values())
    assert "bits" in summary["prior_checks"] and "identity" in summary["prior_checks"]["stages"]
    # What the device sends back: at most 8 files, none deeper than OUT/a/b.
    files = [p.relative_to(out) for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(p.parts) <= 2 for p in files), files
    assert {"log.txt", "summary.json", "teacher.tar.gz", "runs.tar.gz", "prior_checks.md"} <= {str(p) for p in files}

    from varestorer import Restorer

    restorer = Restorer.from_pretrained(out / "model_v3p")
    assert (restorer.color_fix, restorer.color_fix_levels) == ("wavelet", 4)  # the camera stage's export, as v3R
    assert restorer.model.config.predicted_scales == 4  # and its transformer over the first four scales
    restored = restorer(torch.rand(1, 3, 24, 40))
    assert restored.shape == (1, 3, 96, 160) and torch.isfinite(restored).all()
    assert float(restored.min()) >= 0.0 and float(restored.max()) <= 1.0


def test_prepare_names_a_missing_photo_folder_before_writing_anything(tmp_path: Path) -> None:
    env = {**os.environ, "CARRY": str(tmp_path / "carry"), "TRAIN_SOURCES": str(tmp_path / "nope")}
    done = subprocess.run(["bash", str(SCRIPT), "prepare"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"{tmp_path / 'nope'} is missing" in done.stdout
    assert not (tmp_path / "carry").exists()
