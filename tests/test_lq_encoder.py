"""Default model v3's speed options: the LQ-resolution encoder (models/lq_encoder.py), skipped TAEF2 decoder
Blocks, and the latent regression to another student's LQ latent, through training, export and the Restorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_student_v2 import RECIPE, X4, _taef2_teacher, _v2, _x4_folder, assert_adapter_and_merged_round_trip
from varestorer.archs.srvgg import SRVGGNetCompact
from varestorer.inference.restorer import Restorer
from varestorer.models.lq_encoder import LQEncoder, LQEncoderConfig, layer_strides
from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.tokenizer.taef2 import TAEF2_PRESETS, TAEF2Tokenizer
from varestorer.training import train_student
from varestorer.training.loss_terms import LatentTerm
from varestorer.transformer.config import TransformerConfig, transformer_preset


def _tiny_transformer() -> TransformerConfig:
    return transformer_preset("tiny")


LQ_ENCODER = LQEncoderConfig(features=8, stem_convs=1, tail_from=10)


def _v3(**kw: object) -> StudentConfig:
    options: dict[str, object] = dict(
        precleaner=None, lq_encoder=LQ_ENCODER, decoder_skip_blocks=(15, 18), train_precleaner=True
    )
    return _v2(**{**options, **kw})


def test_tail_enters_at_the_lq_stride_and_copies_the_teachers_layers() -> None:
    teacher = _taef2_teacher()
    encoder = teacher.tokenizer.encoder
    assert layer_strides(encoder.net)[7:11] == [4, 4, 4, 4] and layer_strides(encoder.net)[11] == 8
    lq_encoder = LQEncoder(LQ_ENCODER, encoder, scale=4)  # type: ignore[arg-type]
    lq_encoder.init_from(encoder)  # type: ignore[arg-type]
    for key, value in encoder.net[10:].state_dict().items():
        assert torch.equal(lq_encoder.net.state_dict()[key], value), key
    assert torch.equal(lq_encoder.latent_whiten, encoder.latent_whiten)  # type: ignore[arg-type]
    assert not torch.equal(encoder.latent_whiten, torch.eye(8))  # calibrated: a real copy, not the default
    assert lq_encoder(torch.rand(2, 3, 16, 16) * 2 - 1).shape == (2, 8, 8, 8)  # the 64 px image's latent grid
    for wrong in (6, 11):  # before the stride-4 stage / after the last stride-2 conv
        with pytest.raises(ValueError, match=r"stride 4: one of \[7, 8, 9, 10\]"):
            LQEncoder(LQEncoderConfig(features=8, tail_from=wrong), encoder, scale=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TAEF2 tokenizer's encoder"):
        LQEncoder(LQ_ENCODER, torch.nn.Conv2d(3, 8, 3), scale=4)  # type: ignore[arg-type]


def test_stem_takes_the_first_convs_of_an_srvgg_body() -> None:
    torch.manual_seed(2)
    net = SRVGGNetCompact(X4)  # 8 features, 2 hidden convs: enough for 1 + 1 convs
    lq_encoder = LQEncoder(LQ_ENCODER, _taef2_teacher().tokenizer.encoder, scale=4)  # type: ignore[arg-type]
    last = lq_encoder.stem[-1].weight.clone()
    assert lq_encoder.init_stem_from_srvgg(net.body) == 6  # 2 convs (weight, bias) + 2 PReLUs
    for index in range(4):
        for key, value in net.body[index].state_dict().items():
            assert torch.equal(lq_encoder.stem[index].state_dict()[key], value)
    assert torch.equal(lq_encoder.stem[-1].weight, last)  # the adapter into TAEF2's features is its own
    deep = LQEncoder(LQEncoderConfig(features=8, stem_convs=3), _taef2_teacher().tokenizer.encoder, scale=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot fill a stem"):
        deep.init_stem_from_srvgg(net.body)
    wide = LQEncoder(LQEncoderConfig(features=16, stem_convs=1), _taef2_teacher().tokenizer.encoder, scale=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stem's shape"):
        wide.init_stem_from_srvgg(net.body)


def test_student_encodes_the_lq_at_its_own_size_and_drops_decoder_blocks() -> None:
    teacher = _taef2_teacher()
    student = Student.from_teacher(teacher, _v3()).eval()
    assert isinstance(student.encoder, LQEncoder) and student.precleaner is None
    keys = student.decoder.state_dict().keys()
    assert not any(k.startswith(("net.15.", "net.18.")) for k in keys) and any(k.startswith("net.14.") for k in keys)
    for key, value in student.decoder.state_dict().items():  # the rest is the teacher's
        assert torch.equal(value, teacher.tokenizer.decoder.state_dict()[key]), key
    seen: list[tuple[int, ...]] = []
    student.encoder.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        assert student(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
        assert student(torch.rand(1, 3, 20, 12)).shape == (1, 3, 64, 64)  # resized to the LQ size, not 64 px
    assert seen == [(1, 3, 16, 16), (1, 3, 16, 16)]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="replaces the pre-cleaner"):
        _v3(precleaner=X4)
    plain = dict(tokenizer=tokenizer_preset("tiny"), transformer=_tiny_transformer(), image_size=64)
    with pytest.raises(ValueError, match="needs a TAEF2 tokenizer's encoder"):  # checked once the family is known
        Student(StudentConfig(**plain, lq_encoder=LQ_ENCODER))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a decoder Block"):
        Student(StudentConfig(**plain, decoder_skip_blocks=(3,)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"12 is not a decoder Block; the Blocks are at \[3, 4, 5, 8"):
        Student.from_teacher(_taef2_teacher(), _v3(decoder_skip_blocks=(12,)))
    lite = TAEF2Tokenizer(TAEF2_PRESETS["taef2-tiny-lite"])
    with pytest.raises(ValueError, match="18 is not a decoder Block"):  # already left out by the lite variant
        Student(_v3(tokenizer=lite.config, tokenizer_type="TAEF2Tokenizer", transformer=_tiny_transformer()))


def test_encoder_blocks_left_out_are_checked_and_kept_by_adapter_checkpoints(tmp_path: Path) -> None:
    """v2Q's encoder (``encoder_skip_blocks``): identities at those indices, the rest the teacher's; an adapter
    checkpoint stores it even frozen (the teacher's encoder has those Blocks)."""
    teacher = _taef2_teacher()
    teacher.save_pretrained(tmp_path / "teacher")
    with pytest.raises(ValueError, match=r"6 is not an encoder Block; the Blocks are at \[1, 3, 4, 5, 7"):
        Student.from_teacher(teacher, _v2(encoder_skip_blocks=(6,)))
    with pytest.raises(ValueError, match="not to an lq_encoder"):
        _v3(encoder_skip_blocks=(3,))
    config = _v2(teacher=str(tmp_path / "teacher"), encoder_skip_blocks=(3, 4, 5), train_encoder=False)
    student = Student.from_teacher(teacher, config)
    net = student.encoder.net  # type: ignore[union-attr]
    assert all(isinstance(net[i], torch.nn.Identity) for i in (3, 4, 5))
    for key, value in student.encoder.state_dict().items():
        assert torch.equal(value, teacher.tokenizer.encoder.state_dict()[key]), key
    with torch.no_grad():
        net[0].weight.add_(0.1)  # type: ignore[index, union-attr]  # as a latent stage would leave it
    assert any(k.startswith("encoder.net.0.") for k in student.trainable_state_dict())
    assert_adapter_and_merged_round_trip(student, tmp_path)


def test_adapter_checkpoint_keeps_the_lq_encoder_even_when_frozen(tmp_path: Path) -> None:
    teacher = _taef2_teacher()
    teacher.save_pretrained(tmp_path / "teacher")
    student = Student.from_teacher(teacher, _v3(teacher=str(tmp_path / "teacher"), train_encoder=False))
    with torch.no_grad():
        student.encoder.stem[0].weight.add_(0.3)  # type: ignore[index, union-attr]
    assert any(k.startswith("encoder.stem.") for k in student.trainable_state_dict())
    assert_adapter_and_merged_round_trip(student, tmp_path)


def test_latent_loss_pulls_the_lq_encoder_towards_another_students_latent() -> None:
    teacher = _taef2_teacher()
    reference = Student.from_teacher(teacher, _v2()).eval()  # v2-shaped: x4 pre-cleaner + TAEF2 encoder at 64 px
    student = Student.from_teacher(teacher, _v3()).train()
    module = train_student.StudentDistillation(
        student, teacher.tokenizer, teacher.transformer, [LatentTerm(1.0, teacher=reference)]
    ).train()
    assert not module.terms["latent"].net.training  # type: ignore[union-attr]
    batch = {"gt": torch.rand(2, 3, 64, 64), "lq": torch.rand(2, 3, 16, 16), "caption": ["", ""]}
    with torch.no_grad():
        expected = (student.encode(batch["lq"]).f_lq - reference.encode(reference.preclean(batch["lq"])).f_lq) ** 2
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(6):
        loss, logs = module(batch, step)
        assert set(logs) == {"mse", "latent"}
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in student.decoder.parameters())  # no image loss: nothing reaches it
        optimizer.step()
    assert losses[0] == pytest.approx(float(expected.mean()), rel=1e-4)
    assert losses[-1] < 0.7 * losses[0], losses
    with pytest.raises(ValueError, match="needs teacher"):
        LatentTerm(1.0)


@pytest.mark.slow  # a training run, export and Restorer: ~15 s on the 2-core box
def test_latent_regression_trains_the_lq_encoder_towards_another_students_latent(tmp_path: Path, tiny_image) -> None:
    root = tmp_path
    teacher = _taef2_teacher()
    teacher.save_pretrained(root / "teacher")
    _x4_folder(root / "x4")
    reference = Student.from_teacher(teacher, _v2())  # a v2-shaped student: x4 pre-cleaner + TAEF2 encoder
    reference.merged().save_pretrained(root / "v2")
    for index in range(2):
        (root / "hq").mkdir(exist_ok=True)
        Image.fromarray(tiny_image(80, 96, seed=index)).save(root / "hq" / f"{index}.png")
    common = [
        f"model.teacher={root / 'teacher'}",
        f'data.train_dirs=["{root / "hq"}"]',
        "train.val_every=0",
        "train.log_every=1",
        "model.precleaner=false",
        "model.lq_encoder=true",
        "model.lq_encoder_features=8",
        "model.lq_encoder_stem_convs=1",
        f"model.lq_encoder_init={root / 'x4'}",
        "model.decoder_skip_blocks=[15, 18]",
        "model.lq_bit_skip=true",
        "model.fidelity_path=true",
        f"model.latent_teacher={root / 'v2'}",
        "loss.lambda_latent=1.0",
        "loss.lambda_kl=0.0",
        "loss.lambda_mse=0.0",
        "loss.lambda_perceptual=0.0",
        "train.learning_rate=3e-3",
        "train.warmup_steps=0",
    ]
    overrides = [*common, f"train.output_dir={root / 'run'}", "train.max_steps=8", "train.batch_size=2"]
    assert train_student.main(RECIPE, overrides=overrides) == 0
    trained = Student.from_pretrained(root / "run" / "model")
    v2 = Student.from_pretrained(root / "v2")
    lq = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(7))

    def gap(model: Student) -> float:
        with torch.no_grad():
            return float(((model.encode(lq).f_lq - v2.encode(v2.preclean(lq)).f_lq) ** 2).mean())

    untrained = Student.from_teacher(teacher, _v3())
    train_student.load_lq_encoder_init(untrained, root / "x4")
    assert gap(trained) < 0.8 * gap(untrained), (gap(trained), gap(untrained))
    assert isinstance(trained.encoder, LQEncoder) and trained.config.decoder_skip_blocks == (15, 18)
    restorer = Restorer.from_pretrained(root / "run" / "model")
    out = restorer(np.asarray(tiny_image(24, 20, seed=5)))
    assert out.shape == (96, 80, 3) and out.dtype == np.uint8


def test_a_students_tile_overlap_is_the_restorers_default() -> None:
    student = Student.from_teacher(_taef2_teacher(), _v3(tile_overlap=4)).eval()
    assert Restorer(student)._tiling(None, None) == (16, 4)
    assert Restorer(student, tile_overlap=2)._tiling(None, None) == (16, 2)  # the caller's wins
    assert Restorer(Student.from_teacher(_taef2_teacher(), _v3()))._tiling(None, None) == (16, 4)  # tile / 4
    with pytest.raises(ValueError, match="tile_overlap must be in"):
        _v3(tile_overlap=16)


@pytest.mark.parametrize("recipe", ["student_v2q_latent.toml", "student_v2q.toml"])
def test_v2q_recipes_parse_with_the_blocks_they_leave_out(recipe: str) -> None:
    from varestorer.training.student_recipe import load_student_recipe

    parsed = load_student_recipe(Path(__file__).parents[1] / "recipes" / recipe)
    model = parsed.model
    assert tuple(model["encoder_skip_blocks"]) == (3, 4, 5) and tuple(model["decoder_skip_blocks"]) == (14, 15)
    latent_stage = recipe == "student_v2q_latent.toml"
    latent = [term for term in parsed.loss if term.name == "latent" and term.weight > 0]
    assert model["train_encoder"] == latent_stage and bool(latent) == latent_stage
