"""``varestorer train teacher`` end to end on a tiny recipe, plus its loss pieces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import train_job_args
from varestorer.cli.main import main
from varestorer.data.datasets import HQFolderDataset
from varestorer.models.teacher import Teacher
from varestorer.models.teacher_config import TeacherConfig
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.training import checkpoints as ckpt
from varestorer.training.losses import accuracy_per_scale, bitwise_cross_entropy, scale_weights
from varestorer.training.train_teacher import LossConfig, TeacherTraining, validate_teacher
from varestorer.transformer.config import transformer_preset
from varestorer.transformer.model import NextScaleTransformer

RECIPE = Path(__file__).parent / "data" / "teacher_tiny.toml"


@pytest.fixture
def folders(tmp_path: Path, tiny_image) -> tuple[Path, Path]:
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    val.mkdir()
    for i in range(4):
        Image.fromarray(tiny_image(64 + 8 * i, 72, seed=i)).save(train / f"{i}.png")
    (train / "0.txt").write_text("a photo of a cat\n")  # a caption sidecar; the others are uncaptioned
    for i in range(2):
        Image.fromarray(tiny_image(64, 64, seed=10 + i)).save(val / f"{i}.png")
    return train, val


def _args(tmp_path: Path, folders: tuple[Path, Path], *extra: str) -> list[str]:
    return train_job_args("teacher", RECIPE, tmp_path / "run", folders, *extra)


def test_train_teacher_end_to_end_and_resume(tmp_path: Path, folders, capsys) -> None:
    assert main(_args(tmp_path, folders)) == 0
    run = tmp_path / "run"
    root = run / "checkpoints"
    assert ckpt.find_latest(root) == root / "step_00000004"
    teacher = Teacher.from_pretrained(run / "model")
    assert teacher.config.image_size == 64
    images = teacher.generate(num_images=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64)
    tensors, state = ckpt.load_checkpoint(root / "step_00000004")
    assert state["step"] == 4
    assert "teacher.transformer.head.weight" in tensors["trainable"]
    assert not any(k.startswith("teacher.tokenizer.encoder") for k in tensors["trainable"])  # frozen
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert main(_args(tmp_path, folders, "--resume", "--set", "train.max_steps=6")) == 0
    assert ckpt.find_latest(root) == root / "step_00000006"


def test_train_teacher_with_a_tiny_t5_text_encoder(tmp_path: Path, folders) -> None:
    pytest.importorskip("transformers")
    from test_text import _write_tiny_t5

    _write_tiny_t5(tmp_path / "t5")
    extra = [
        "--set",
        f'model.text_encoder={{kind = "transformers", path = "{tmp_path / "t5"}", max_length = 8}}',
        "--set",
        "model.changes={text_dim = 32}",
        "--set",
        "train.max_steps=2",
    ]
    assert main(_args(tmp_path, folders, *extra)) == 0
    teacher = Teacher.from_pretrained(tmp_path / "run" / "model")
    assert teacher.config.text_encoder.kind == "transformers"
    images = teacher.generate(["a photo of a cat", "a dog"], cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64)


def test_bad_recipes_are_one_line_errors(tmp_path: Path, folders, capsys) -> None:
    assert main(_args(tmp_path, folders, "--set", 'model.tokenizer="x"')) == 2
    assert "exactly one of tokenizer" in capsys.readouterr().err
    assert main(_args(tmp_path, folders, "--set", "data.crop_size=40")) == 2
    assert "not a multiple of 16" in capsys.readouterr().err


def test_scale_weights_and_bitwise_loss() -> None:
    schedule = ((1, 1), (2, 2), (4, 4))
    uniform = scale_weights(schedule, reweight=False)
    assert uniform.shape == (21,) and torch.allclose(uniform, torch.full((21,), 1 / 21))
    weighted = scale_weights(schedule, reweight=True)
    torch.testing.assert_close(weighted.sum(), torch.tensor(1.0))
    assert weighted[0] / weighted[-1] == pytest.approx(4.0)  # sqrt(16 / 1)
    labels = torch.randint(0, 2, (2, 21, 8))
    perfect = torch.nn.functional.one_hot(labels, 2).float() * 40 - 20
    loss, accuracy = bitwise_cross_entropy(perfect, labels, weighted)
    assert loss < 1e-6 and accuracy == 1.0
    loss, _ = bitwise_cross_entropy(torch.zeros(2, 21, 8, 2), labels, weighted)
    assert loss.item() == pytest.approx(0.6931, abs=1e-4)
    # A codebook model: (B, L, V) logits, (B, L) indices.
    loss, accuracy = bitwise_cross_entropy(torch.zeros(2, 21, 16), torch.zeros(2, 21, dtype=torch.long), uniform)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(16.0)).item(), abs=1e-4) and accuracy == 1.0


def test_shipped_recipe_parses() -> None:
    from varestorer.training.config import load_recipe
    from varestorer.training.train_teacher import SECTIONS

    configs = load_recipe(Path(__file__).parents[1] / "recipes" / "teacher_small.toml", SECTIONS)
    assert configs["model"].preset == "small" and configs["data"].crop_size == 256


def test_accuracy_per_scale_counts_each_scale_apart() -> None:
    schedule = ((1, 1), (2, 2), (4, 4))
    labels = torch.randint(0, 2, (2, 21, 8), generator=torch.Generator().manual_seed(0))
    bits = labels.clone()
    bits[:, 5:21, :4] = 1 - bits[:, 5:21, :4]  # half the bits of the 4x4 scale wrong
    assert accuracy_per_scale(bits, labels, schedule).tolist() == [1.0, 1.0, 0.5]
    logits = torch.stack([1 - bits, bits], dim=-1).float()  # the same bits as logits
    assert accuracy_per_scale(logits, labels, schedule).tolist() == [1.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="do not cover"):
        accuracy_per_scale(bits[:, :20], labels[:, :20], schedule)


def test_the_teacher_validation_reports_each_scale(tmp_path: Path, folders) -> None:
    torch.manual_seed(0)
    tokenizer = MultiScaleTokenizer.from_preset("tiny")
    teacher = Teacher(tokenizer, NextScaleTransformer(transformer_preset("tiny")), TeacherConfig(image_size=64))
    module = TeacherTraining(teacher, LossConfig(num_samples=0), None).eval()
    dataset = HQFolderDataset(folders[1], crop_size=64, random_crop=False, hflip=False)
    results = validate_teacher(module, dataset, limit=2)
    schedule = teacher.schedule(64, 64)
    per_scale = [results[f"bit_accuracy_{h}x{w}"] for h, w in schedule]
    areas = [h * w for h, w in schedule]
    weighted = sum(a * p for a, p in zip(areas, per_scale, strict=True)) / sum(areas)
    assert weighted == pytest.approx(results["bit_accuracy"], abs=1e-6)  # the scales make up the whole
    assert all(0.0 <= p <= 1.0 for p in per_scale)
