"""``varestorer train tokenizer`` end to end on a tiny recipe, plus its loss pieces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import train_job_args
from varestorer.cli.main import main
from varestorer.training import checkpoints as ckpt
from varestorer.training.discriminator import PatchDiscriminator, hinge_discriminator_loss

pytest.importorskip("varestorer.tokenizer.autoencoder", reason="needs the tokenizer package (branch tok)")
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer  # noqa: E402
from varestorer.training.losses import batch_psnr as psnr  # noqa: E402
from varestorer.training.train_tokenizer import LossConfig, TokenizerTraining  # noqa: E402

RECIPE = Path(__file__).parent / "data" / "tokenizer_tiny.toml"


@pytest.fixture
def folders(tmp_path: Path, tiny_image) -> tuple[Path, Path]:
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    val.mkdir()
    for i in range(5):
        Image.fromarray(tiny_image(40 + 4 * i, 48, seed=i)).save(train / f"{i}.png")
    for i in range(2):
        Image.fromarray(tiny_image(32, 36, seed=10 + i)).save(val / f"{i}.png")
    return train, val


def _args(tmp_path: Path, folders: tuple[Path, Path], *extra: str) -> list[str]:
    return train_job_args("tokenizer", RECIPE, tmp_path / "run", folders, *extra)


def test_train_tokenizer_end_to_end_and_resume(tmp_path: Path, folders, capsys) -> None:
    assert main(_args(tmp_path, folders)) == 0
    run = tmp_path / "run"
    root = run / "checkpoints"
    assert ckpt.find_latest(root) == root / "step_00000004"
    tokenizer = MultiScaleTokenizer.from_pretrained(root / "step_00000004" / "model")
    final = MultiScaleTokenizer.from_pretrained(run / "model")
    for (name, a), b in zip(tokenizer.state_dict().items(), final.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert tokenizer.decode(tokenizer.tokenize(x).f_hat).shape == (1, 3, 32, 32)
    # The export holds the EMA weights, the resumable state the live ones.
    tensors, state = ckpt.load_checkpoint(root / "step_00000004")
    assert state["step"] == 4 and "discriminator.net.0.weight" in tensors["trainable"]
    name = sorted(k for k in tensors["ema"] if k.startswith("tokenizer.decoder."))[-1]
    assert torch.equal(tokenizer.state_dict()[name.removeprefix("tokenizer.")], tensors["ema"][name])
    assert not torch.equal(tensors["trainable"][name], tensors["ema"][name])
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    # Without --resume an existing run is refused with a one-line error; with it, training continues.
    assert main(_args(tmp_path, folders)) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(_args(tmp_path, folders, "--resume", "--set", "train.max_steps=6")) == 0
    assert ckpt.find_latest(root) == root / "step_00000006"
    assert sorted(p.name for p in ckpt.list_checkpoints(root)) == ["step_00000004", "step_00000006"]


def test_bad_recipe_values_are_one_line_errors(tmp_path: Path, folders, capsys) -> None:
    assert main(_args(tmp_path, folders, "--set", "loss.l1_wieght=1.0")) == 2
    assert "unknown key(s) l1_wieght" in capsys.readouterr().err
    assert main(_args(tmp_path, folders, "--set", "data.crop_size=40")) == 2
    assert "multiple of the tokenizer stride 16" in capsys.readouterr().err


def test_perceptual_term_without_fetched_weights_is_a_clear_error(tmp_path: Path, folders, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VARESTORER_CACHE", str(tmp_path / "empty-cache"))  # LPIPS-VGG weights not fetched
    assert main(_args(tmp_path, folders, "--set", "loss.perceptual_weight=0.5")) == 2
    err = capsys.readouterr().err
    assert "varestorer assets fetch" in err and err.count("\n") == 1


def test_generator_term_does_not_train_the_discriminator() -> None:
    module = TokenizerTraining(
        MultiScaleTokenizer.from_preset("tiny"),
        LossConfig(gan_weight=1.0, discriminator_channels=8, discriminator_layers=2),
    )
    batch = {"gt": torch.rand(2, 3, 32, 32)}
    loss, logs = module(batch, step=0)
    loss.backward()
    assert "gan_generator" in logs
    combined = {n: p.grad.clone() for n, p in module.discriminator.named_parameters()}
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.tokenizer.parameters())
    module.zero_grad()
    with torch.no_grad():
        x = batch["gt"] * 2 - 1
        rec = module.tokenizer.decode(module.tokenizer.tokenize(x).f_hat, clamp=False)
    hinge_discriminator_loss(module.discriminator(x), module.discriminator(rec)).backward()
    for name, param in module.discriminator.named_parameters():
        torch.testing.assert_close(param.grad, combined[name], msg=name)


def test_patch_discriminator_shape_and_psnr() -> None:
    logits = PatchDiscriminator(8, 3)(torch.zeros(2, 3, 64, 64))
    assert logits.shape[:2] == (2, 1) and logits.ndim == 4
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a, a + 0.1).item() == pytest.approx(20.0, abs=1e-4)


def test_train_taef2_from_released_layout_files(tmp_path: Path, folders) -> None:
    from test_taef2 import synthetic_files
    from varestorer.tokenizer.loading import load_tokenizer
    from varestorer.tokenizer.taef2 import TAEF2Tokenizer

    weights = tmp_path / "weights"
    weights.mkdir()
    synthetic_files(weights)  # taef2-tiny shapes under the released key names
    args = _args(tmp_path, folders, "--set", 'model.preset="taef2-tiny"', "--set", f'model.pretrained_dir="{weights}"')
    calibration = ["--set", "model.calibration_images=3", "--set", "model.calibration_crop_size=32"]
    assert main([*args, *calibration, "--set", "loss.gan_weight=0.0"]) == 2  # synthetic files: sha256 refused
    assert main([*args, *calibration, "--set", "loss.gan_weight=0.0", "--set", "model.verify_sha256=false"]) == 0
    model = load_tokenizer(tmp_path / "run" / "model")
    assert isinstance(model, TAEF2Tokenizer)
    assert not torch.equal(model.encoder.latent_whiten, torch.eye(8))  # calibrated on the training crops
    assert torch.equal(model.encoder.latent_unwhiten, model.decoder.latent_unwhiten)
