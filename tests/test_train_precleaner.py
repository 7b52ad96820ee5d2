"""``varestorer train precleaner``: the job trains, validates, exports a loadable pre-cleaner."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from varestorer.cli.main import main
from varestorer.foreign.peers import build_peer, load_precleaner
from varestorer.models.precleaner import PreCleaner
from varestorer.training.train_precleaner import LossConfig, PreCleanerTraining, clean_target

RECIPE = Path(__file__).parent / "data" / "precleaner_tiny.toml"


def test_train_precleaner_end_to_end(tmp_path: Path, tiny_image, capsys) -> None:
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    val.mkdir()
    for i in range(4):
        Image.fromarray(tiny_image(40, 44, seed=i)).save(train / f"{i}.png")
    Image.fromarray(tiny_image(36, 36, seed=9)).save(val / "v.png")
    args = ["train", "precleaner", "--config", str(RECIPE), "--set", f'train.output_dir="{tmp_path / "run"}"']
    args += ["--set", f'data.train_dirs=["{train}"]', "--set", f'data.val_dir="{val}"']
    assert main(args) == 0, capsys.readouterr().err
    cleaner = load_precleaner(tmp_path / "run" / "model")
    x = torch.rand(1, 3, 12, 10)
    assert cleaner(x).shape == x.shape
    # Restore with it through the CLI (the exported folder is a --precleaner PATH).
    model_dir = build_peer("precleaner-1x").save_pretrained(tmp_path / "sr")  # any OneStepSR checkpoint
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "a.png")
    restore = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(model_dir)]
    assert main([*restore, "--precleaner", str(tmp_path / "run" / "model")]) == 0


def test_loss_decreases_and_target_is_clean_downscale() -> None:
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 16, 16)
    lq = (torch.nn.functional.avg_pool2d(gt, 4) + 0.05 * torch.randn(2, 3, 4, 4)).clamp(0, 1)
    assert clean_target(gt, lq).shape == lq.shape
    module = PreCleanerTraining(PreCleaner(build_peer("precleaner-1x")), LossConfig())
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-3)
    losses = []
    for step in range(25):
        loss, logs = module({"lq": lq, "gt": gt}, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0] and set(logs) == {"l1", "mse"}
