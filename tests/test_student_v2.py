"""Default model v2's student options: any tokenizer family, an x4 pre-cleaner at output resolution, the
LQ-bit skip and the fidelity path (beyond the paper), through training, export and the Restorer."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.checkpoint import read_config
from varestorer.cli.main import main as cli
from varestorer.config import config_from_dict, config_to_dict
from varestorer.inference.restorer import Restorer
from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.models.teacher import Teacher
from varestorer.models.teacher_config import TeacherConfig
from varestorer.tokenizer.taef2 import TAEF2_PRESETS, TAEF2Tokenizer
from varestorer.training import train_student
from varestorer.transformer.config import transformer_preset
from varestorer.transformer.model import NextScaleTransformer

RECIPE = Path(__file__).parent / "data" / "student_tiny.toml"
X4 = SRVGGConfig(num_feat=8, num_conv=2, upscale=4)  # realesr-general-x4v3's structure, narrow
SCALES = (1, 2, 4, 8)  # the teacher's fixed schedule at 64 px (stride 8: an 8 x 8 grid)


def _taef2_teacher(seed: int = 0) -> Teacher:
    torch.manual_seed(seed)
    tokenizer = TAEF2Tokenizer(TAEF2_PRESETS["taef2-tiny"])
    tokenizer.calibrate(torch.rand(2, 3, 64, 64) * 2 - 1)
    transformer = NextScaleTransformer(transformer_preset("tiny"))
    with torch.no_grad():  # Infinity-style init zeroes some output projections; make every path matter
        for param in transformer.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    config = TeacherConfig(image_size=64, scales=SCALES)
    return Teacher(tokenizer, transformer, config).eval()  # type: ignore[arg-type]


def _v2(**kw: object) -> StudentConfig:
    options = dict(
        image_size=64,
        scale=4,
        lora_rank=2,
        lora_alpha=2.0,
        precleaner=X4,
        precleaner_resolution="output",
        train_precleaner=False,
        lq_bit_skip=True,
        fidelity_path=True,
    )
    return StudentConfig(**{**options, **kw})  # type: ignore[arg-type]


def test_student_takes_the_teachers_tokenizer_family_and_schedule() -> None:
    student = Student.from_teacher(_taef2_teacher(), StudentConfig(image_size=64, scale=4, lora_rank=2))
    assert student.config.tokenizer_type == "TAEF2Tokenizer"
    assert student.schedule == tuple((s, s) for s in SCALES)
    assert student.eval()(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
    own = Student.from_teacher(_taef2_teacher(), StudentConfig(image_size=64, scale=4, schedule=((1, 1), (8, 8))))
    assert own.schedule == ((1, 1), (8, 8))  # a schedule of the student's own wins


def test_config_json_round_trips_and_old_files_still_load() -> None:
    config = Student.from_teacher(_taef2_teacher(), _v2()).config
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(StudentConfig, data) == config
    old = config_to_dict(StudentConfig(image_size=64))
    del old["tokenizer_type"], old["precleaner_resolution"], old["lq_bit_skip"], old["fidelity_path"]
    assert config_from_dict(StudentConfig, old) == StudentConfig(image_size=64)
    with pytest.raises(ValueError, match="tokenizer_type"):  # a table that is not the named family's
        StudentConfig(tokenizer=TAEF2_PRESETS["taef2-tiny"], image_size=64)
    with pytest.raises(ValueError, match="unknown key"):
        config_from_dict(StudentConfig, {**data, "tokenizer_type": "MultiScaleTokenizer"})


def test_untrained_skip_and_fidelity_reproduce_the_lq_reconstruction() -> None:
    """With the LQ's bits winning every logit and w = 1, the output is decoder(encoder(x4 pre-cleaner(lq)))."""
    student = Student.from_teacher(_taef2_teacher(), _v2(lq_bit_gain_init=1e4)).eval()
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cleaned = student.precleaner.net(lq).clamp(0, 1)  # type: ignore[union-attr]
        assert cleaned.shape == (2, 3, 64, 64)  # at output resolution: no resize back to 16 px
        expected = ((student.decoder(student.encoder(cleaned * 2 - 1)) + 1) / 2).clamp(0, 1)
        out = student.restore(lq)
    assert torch.allclose(out.sr, expected, atol=1e-5)
    assert out.f_lq is not None and out.f_hat_lq is not None
    assert torch.allclose(out.f_hat, out.f_hat_lq, atol=1e-6)  # the LQ's own tokens
    plain = Student.from_teacher(_taef2_teacher(), _v2(lq_bit_skip=False, fidelity_path=False)).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(lq), expected, atol=1e-3)  # without them the teacher's guess differs


def test_gains_and_weights_train_save_and_merge(tmp_path: Path) -> None:
    teacher = _taef2_teacher()
    teacher.save_pretrained(tmp_path / "teacher")
    student = Student.from_teacher(teacher, _v2(teacher=str(tmp_path / "teacher"))).train()
    assert student.lq_bit_gain is not None and student.fidelity_weight is not None
    assert torch.equal(student.lq_bit_gain, torch.full((len(SCALES),), 4.0))
    assert torch.equal(student.fidelity_weight, torch.ones(8))
    student.restore(torch.rand(2, 3, 16, 16)).sr.mean().backward()
    assert student.lq_bit_gain.grad is not None and student.lq_bit_gain.grad.abs().sum() > 0
    assert student.fidelity_weight.grad is not None and student.fidelity_weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in student.precleaner.parameters())  # type: ignore[union-attr]  # frozen
    with torch.no_grad():
        student.lq_bit_gain.add_(0.5)
        student.fidelity_weight.mul_(0.5)
        next(student.precleaner.parameters()).add_(1.0)  # type: ignore[union-attr]
    kept = student.trainable_state_dict()
    assert {"lq_bit_gain", "fidelity_weight"} <= kept.keys() and any(k.startswith("precleaner.") for k in kept)
    merged = assert_adapter_and_merged_round_trip(student, tmp_path)
    assert torch.equal(merged.lq_bit_gain, student.lq_bit_gain)  # type: ignore[arg-type]


def assert_adapter_and_merged_round_trip(student: Student, tmp_path: Path) -> Student:
    """Save ``student`` as an adapter checkpoint and as a merged export; both reload to the same output."""
    student.save_pretrained(tmp_path / "adapter")
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        reference = student.eval()(lq)
        assert torch.allclose(Student.from_pretrained(tmp_path / "adapter")(lq), reference, atol=1e-5)
        student.merged().save_pretrained(tmp_path / "merged")
        merged = Student.from_pretrained(tmp_path / "merged")
        assert torch.allclose(merged(lq), reference, atol=1e-5)
    return merged


def test_defaults_add_no_tensors() -> None:
    student = Student.from_teacher(_taef2_teacher(), StudentConfig(image_size=64, scale=4, lora_rank=2))
    assert student.lq_bit_gain is None and student.fidelity_weight is None
    assert not {"lq_bit_gain", "fidelity_weight"} & student.state_dict().keys()


def _x4_folder(path: Path) -> SRVGGNetCompact:
    """A synthetic embedded-x4v3-shaped folder: SRVGGNetCompact config.json + fp16 safetensors."""
    torch.manual_seed(3)
    net = SRVGGNetCompact(X4)
    net.save_pretrained(path, dtype=torch.float16)
    return net


def test_end_to_end_taef2_teacher_to_restorer(tmp_path: Path, tiny_image) -> None:
    root = tmp_path
    _taef2_teacher().save_pretrained(root / "teacher")
    net = _x4_folder(root / "x4")
    assert read_config(root / "x4")["model_type"] == "SRVGGNetCompact"
    for index in range(2):
        (root / "hq").mkdir(exist_ok=True)
        Image.fromarray(tiny_image(80, 96, seed=index)).save(root / "hq" / f"{index}.png")
    overrides = [
        f"train.output_dir={root / 'run'}",
        f"model.teacher={root / 'teacher'}",
        f'data.train_dirs=["{root / "hq"}"]',
        "train.max_steps=2",
        "train.val_every=0",
        "model.precleaner_features=8",
        "model.precleaner_convs=2",
        "model.precleaner_upscale=4",
        "model.precleaner_resolution=output",
        "model.train_precleaner=false",
        f"model.precleaner_init={root / 'x4'}",
        "model.lq_bit_skip=true",
        "model.fidelity_path=true",
        "model.skip_lr_scale=10.0",
    ]
    assert train_student.main(RECIPE, overrides=overrides) == 0
    trained = Student.from_pretrained(root / "run" / "model")
    assert trained.config.tokenizer_type == "TAEF2Tokenizer" and trained.schedule[-1] == (8, 8)
    for key, value in net.state_dict().items():  # frozen at the fp16-stored init
        assert torch.equal(trained.precleaner.net.state_dict()[key], value.half().float()), key  # type: ignore[union-attr]
    assert not torch.equal(trained.lq_bit_gain, torch.full((len(SCALES),), 4.0))  # type: ignore[arg-type]
    assert cli(["export", str(root / "run" / "model"), "-o", str(root / "merged"), "--merge"]) == 0
    restorer = Restorer.from_pretrained(root / "merged")
    out = restorer(np.asarray(tiny_image(16, 16, seed=5)))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_precleaner_init_reads_pth_and_refuses_other_shapes(tmp_path: Path) -> None:
    teacher = _taef2_teacher()
    student = Student.from_teacher(teacher, _v2())
    torch.manual_seed(4)
    net = SRVGGNetCompact(X4)
    torch.save({"params": net.state_dict()}, tmp_path / "x4.pth")  # Real-ESRGAN's wrapper
    train_student.load_precleaner_init(student, tmp_path / "x4.pth")
    assert torch.equal(student.precleaner.net.body[0].weight, net.body[0].weight)  # type: ignore[union-attr, index, arg-type]
    SRVGGNetCompact(replace(X4, num_conv=3)).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="the recipe's pre-cleaner"):
        train_student.load_precleaner_init(student, tmp_path / "other")
    with pytest.raises(FileNotFoundError):
        train_student.load_precleaner_init(student, tmp_path / "missing")
    with pytest.raises(ValueError, match="the recipe's pre-cleaner"):  # the embedded name resolves (64 x 32 convs)
        train_student.load_precleaner_init(student, "realesr-general-x4v3")
