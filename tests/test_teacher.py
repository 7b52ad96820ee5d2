"""The Teacher bundle: folder round trip, generation, and ``varestorer generate``."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from varestorer.models.teacher import Teacher
from varestorer.models.teacher_config import TeacherConfig
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.transformer.config import TRANSFORMER_PRESETS, transformer_preset
from varestorer.transformer.model import NextScaleTransformer


def tiny_teacher() -> Teacher:
    tokenizer = MultiScaleTokenizer.from_preset("tiny")
    transformer = NextScaleTransformer(TRANSFORMER_PRESETS["tiny"])
    return Teacher(tokenizer, transformer, TeacherConfig(image_size=64)).eval()


def test_save_load_and_generate(tmp_path) -> None:
    teacher = tiny_teacher()
    teacher.save_pretrained(tmp_path / "teacher")
    assert sorted(p.name for p in (tmp_path / "teacher").iterdir()) == ["config.json", "tokenizer", "transformer"]
    loaded = Teacher.from_pretrained(tmp_path / "teacher")
    assert loaded.config == teacher.config
    a = teacher.generate(num_images=2, generator=torch.Generator().manual_seed(0))
    b = loaded.generate(num_images=2, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 64, 64) and a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="no text encoder"):
        teacher.generate(["a cat"])
    with pytest.raises(FileExistsError):
        teacher.save_pretrained(tmp_path / "teacher")


def test_token_dims_must_agree() -> None:
    with pytest.raises(ValueError, match="transformer d=4"):
        Teacher(MultiScaleTokenizer.from_preset("tiny"), NextScaleTransformer(transformer_preset("tiny", token_dim=4)))


def test_generate_command_writes_images(tmp_path, capsys) -> None:
    from varestorer.cli.main import main  # in process: a fresh interpreter costs ~5 s of torch import

    tiny_teacher().save_pretrained(tmp_path / "teacher")
    command = ["generate", "--model", str(tmp_path / "teacher")]
    command += ["-n", "3", "--batch-size", "2", "-o", str(tmp_path / "out"), "--size", "32"]
    assert main(command) == 0, capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["000.png", "001.png", "002.png"]
    assert Image.open(tmp_path / "out" / "000.png").size == (32, 32)
    capsys.readouterr()
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "exists" in err and err.count("\n") == 1


def test_fixed_scales_at_image_size(tmp_path) -> None:
    tokenizer = MultiScaleTokenizer.from_preset("tiny")
    grid = 64 // tokenizer.stride
    teacher = Teacher(
        tokenizer, NextScaleTransformer(TRANSFORMER_PRESETS["tiny"]), TeacherConfig(image_size=64, scales=(1, grid))
    )
    assert teacher.schedule() == ((1, 1), (grid, grid))
    assert teacher.schedule(128, 128) == tokenizer.default_schedule(128, 128)  # other sizes: the default
    teacher.save_pretrained(tmp_path / "t")
    assert Teacher.from_pretrained(tmp_path / "t").schedule() == ((1, 1), (grid, grid))
    assert teacher.generate(num_images=1, generator=torch.Generator().manual_seed(0)).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="must end at the latent grid"):
        Teacher(tokenizer, teacher.transformer, TeacherConfig(image_size=64, scales=(1, 2))).schedule()
    with pytest.raises(ValueError, match="increasing"):
        TeacherConfig(scales=(2, 1))
