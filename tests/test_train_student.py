from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("varestorer.training.trainer", reason="the shared Trainer is not merged yet")

from varestorer.models.student import Student  # noqa: E402
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer  # noqa: E402
from varestorer.tokenizer.config import tokenizer_preset  # noqa: E402
from varestorer.training import train_student  # noqa: E402
from varestorer.transformer.config import transformer_preset  # noqa: E402
from varestorer.transformer.model import NextScaleTransformer  # noqa: E402

RECIPE = Path(__file__).parent / "data" / "student_tiny.toml"


@pytest.fixture
def setup(tmp_path, tiny_image):
    teacher = tmp_path / "teacher"
    MultiScaleTokenizer(tokenizer_preset("tiny")).save_pretrained(teacher / "tokenizer")
    NextScaleTransformer(transformer_preset("tiny")).save_pretrained(teacher / "transformer")
    for index in range(4):
        (tmp_path / "hq").mkdir(exist_ok=True)
        Image.fromarray(tiny_image(80, 96, seed=index)).save(tmp_path / "hq" / f"{index}.png")
    for sub, size in (("gt", 64), ("lq", 16)):
        (tmp_path / "val" / sub).mkdir(parents=True)
        Image.fromarray(tiny_image(size, size, seed=9)).save(tmp_path / "val" / sub / "a.png")
    return tmp_path


def _overrides(root: Path, out: str, *extra: str) -> list[str]:
    return [
        f"train.output_dir={root / out}",
        f"model.teacher={root / 'teacher'}",
        f'data.train_dirs=["{root / "hq"}"]',
        f"data.val_lq_dir={root / 'val' / 'lq'}",
        f"data.val_gt_dir={root / 'val' / 'gt'}",
        *extra,
    ]


def _trainable(directory: Path) -> dict[str, torch.Tensor]:
    return Student.from_pretrained(directory).trainable_state_dict()


def test_distillation_runs_exports_and_resumes_continuously(setup) -> None:
    root = setup
    assert train_student.main(RECIPE, overrides=_overrides(root, "straight")) == 0
    straight = _trainable(root / "straight" / "model")
    student = Student.from_pretrained(root / "straight" / "model")
    assert student(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
    # the adapters moved away from the teacher (B starts at zero)
    assert any(v.abs().sum() > 0 for k, v in straight.items() if k.endswith("lora_B"))

    assert train_student.main(RECIPE, overrides=_overrides(root, "halves", "train.max_steps=2")) == 0
    assert train_student.main(RECIPE, resume=True, overrides=_overrides(root, "halves")) == 0
    halves = _trainable(root / "halves" / "model")
    assert straight.keys() == halves.keys()
    for key in straight:
        assert torch.allclose(straight[key], halves[key], atol=1e-5), key


@pytest.mark.parametrize(
    "variant",
    ["train.max_steps=1 loss.lambda_kl=0.0", "train.max_steps=1 model.attention=causal model.precleaner=false"],
)
def test_ablation_variants_run(setup, variant) -> None:
    assert train_student.main(RECIPE, overrides=_overrides(setup, "v", *variant.split())) == 0
    student = Student.from_pretrained(setup / "v" / "model")
    if "causal" in variant:
        assert student.config.attention == "causal" and student.precleaner is None


def test_missing_teacher_is_a_clear_error(setup) -> None:
    with pytest.raises((ValueError, FileNotFoundError)):
        train_student.main(RECIPE, overrides=_overrides(setup, "x", f"model.teacher={setup / 'nothing'}"))
