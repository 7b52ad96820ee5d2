"""Distillation at scale: activation checkpointing, the shared-base teacher, cached caption features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.models.teacher import Teacher
from varestorer.nn.lora import lora_disabled, lora_parameters
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.training import train_student
from varestorer.training.caption_cache import CaptionCache
from varestorer.training.loss_terms import KLTerm, MSETerm
from varestorer.training.losses import token_kl
from varestorer.training.trainer import enable_activation_checkpointing
from varestorer.transformer.config import transformer_preset
from varestorer.transformer.model import NextScaleTransformer

NO_IMAGE_LOSSES = [MSETerm(0.5), KLTerm(1.0)]


def _teacher(drop_path: float = 0.0) -> tuple[MultiScaleTokenizer, NextScaleTransformer]:
    torch.manual_seed(0)
    tokenizer = MultiScaleTokenizer(tokenizer_preset("tiny")).eval()
    transformer = NextScaleTransformer(transformer_preset("tiny", drop_path=drop_path)).eval()
    with torch.no_grad():  # the Infinity init zeroes some output paths; make every path matter
        for param in transformer.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return tokenizer, transformer


def _student(drop_path: float = 0.0, **config) -> tuple[Student, MultiScaleTokenizer, NextScaleTransformer]:
    tokenizer, transformer = _teacher(drop_path)
    student = Student.from_teacher(Teacher(tokenizer, transformer), StudentConfig(image_size=64, lora_rank=2, **config))
    with torch.no_grad():  # adapters away from zero: the student is no longer its teacher
        for param in lora_parameters(student.transformer):
            param.normal_(0, 0.2)
    return student.train(), tokenizer, transformer


def _batch(count: int = 2) -> dict:
    gt = torch.rand(count, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    return {"gt": gt, "lq": F.interpolate(gt, size=(16, 16), mode="area"), "caption": [""] * count}


def _loss_and_grads(module: torch.nn.Module, checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.student.transformer.activation_checkpointing = checkpointing
    module.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # drop path draws from the global generator
    loss, _ = module(_batch(), 0)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_the_same_loss_and_gradients() -> None:
    student, tokenizer, transformer = _student(drop_path=0.3)  # drop path: the recompute must replay the RNG
    module = train_student.StudentDistillation(student, tokenizer, transformer, NO_IMAGE_LOSSES).train()
    plain_loss, plain = _loss_and_grads(module, False)
    ckpt_loss, ckpt = _loss_and_grads(module, True)
    assert torch.equal(plain_loss, ckpt_loss)
    assert plain.keys() == ckpt.keys() and any("lora" in name for name in plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-6, atol=1e-7, msg=name)


def test_checkpointing_is_only_used_with_gradients_and_the_trainer_finds_it() -> None:
    student, _, _ = _student()
    assert enable_activation_checkpointing(student) == 1 and student.transformer.activation_checkpointing
    with torch.no_grad():  # inference passes are untouched
        assert student.restore(_batch()["lq"]).sr.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="no checkpointable blocks"):
        enable_activation_checkpointing(torch.nn.Linear(2, 2))


def test_lora_disabled_runs_the_base_and_restores_the_adapters() -> None:
    student, _, transformer = _student()
    inputs = torch.randn(1, sum(h * w for h, w in student.schedule) - 1, 8)
    with torch.no_grad():
        base = transformer(inputs, student.schedule, None, mask="causal")
        adapted = student.transformer.eval()(inputs, student.schedule, None, mask="causal")
        with lora_disabled(student.transformer) as count:
            off = student.transformer(inputs, student.schedule, None, mask="causal")
        again = student.transformer(inputs, student.schedule, None, mask="causal")
    assert count > 0 and torch.equal(off, base)
    assert not torch.allclose(adapted, base) and torch.equal(again, adapted)


@pytest.mark.parametrize("train_encoder", [True, False])
def test_shared_base_teacher_gives_the_kl_of_a_separate_copy(train_encoder: bool) -> None:
    student, tokenizer, transformer = _student(drop_path=0.3, train_encoder=train_encoder)
    separate = train_student.StudentDistillation(student, tokenizer, transformer, NO_IMAGE_LOSSES, shared_teacher=False)
    shared = train_student.StudentDistillation(student, tokenizer, transformer, NO_IMAGE_LOSSES, shared_teacher=True)
    assert shared.teacher.transformer is None and separate.teacher.transformer is transformer
    assert shared.teacher.shares_encoder == (not train_encoder)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("shared", shared), ("sep", separate))}
    assert params["sep"] - params["shared"] >= sum(p.numel() for p in transformer.parameters())
    batch = _batch()
    out = student.train().restore(batch["lq"])
    shared_logits = shared.teacher_logits(batch["gt"], None)
    separate_logits = separate.teacher_logits(batch["gt"], None)
    assert torch.equal(shared_logits, separate_logits)
    kl_shared, kl_separate = token_kl(shared_logits, out.logits), token_kl(separate_logits, out.logits)
    assert torch.equal(kl_shared, kl_separate) and kl_shared > 1e-4
    assert student.transformer.training and all(p.requires_grad for p in lora_parameters(student.transformer))
    # and the whole training loss, drop path and all (the teacher pass runs in eval mode either way)
    losses = []
    for module in (shared, separate):
        torch.manual_seed(5)
        losses.append(module(batch, 0)[0])
    assert torch.equal(losses[0], losses[1])


def test_a_separate_teacher_can_run_in_bfloat16() -> None:
    student, tokenizer, transformer = _student()
    module = train_student.StudentDistillation(
        student, tokenizer, transformer, NO_IMAGE_LOSSES, shared_teacher=False, teacher_dtype=torch.bfloat16
    )
    assert next(module.teacher.transformer.parameters()).dtype == torch.bfloat16
    logits = module.teacher_logits(_batch()["gt"], None)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="teacher_dtype"):
        train_student.teacher_dtype("float8")


def test_caption_cache_encodes_each_caption_once_and_matches_the_encoder(tmp_path) -> None:
    from conftest import write_tiny_t5
    from varestorer.transformer.text import TextEncoder

    write_tiny_t5(tmp_path / "t5")
    encoder = TextEncoder.from_pretrained(str(tmp_path / "t5"))
    cache = CaptionCache(encoder)
    batch = ["a photo of a cat", "dog on grass", "a photo of a cat"]
    first = cache(batch)
    direct = encoder(batch)
    assert cache.encoded == 2 and len(cache) == 2
    assert torch.equal(first.lengths, direct.lengths) and first.tokens.shape == direct.tokens.shape
    torch.testing.assert_close(first.tokens, direct.tokens, rtol=1e-5, atol=1e-6)
    second = cache(["dog on grass", "sharp"])
    assert cache.encoded == 3  # only the new caption went through the encoder
    torch.testing.assert_close(second.tokens[0, : int(second.lengths[0])], first.tokens[1, : int(first.lengths[1])])
    with pytest.raises(ValueError, match="no captions"):
        cache([])


def test_the_infinity_2b_recipe_loads_with_the_scale_settings() -> None:
    from pathlib import Path

    from varestorer.training.student_recipe import load_student_recipe

    recipe = Path(__file__).parents[1] / "recipes" / "student_infinity_2b.toml"
    parsed = load_student_recipe(recipe)
    train, model = parsed.train, parsed.model
    assert train.activation_checkpointing and train.mixed_precision == "bf16" and train.sharding == "ddp"
    assert parsed.job.shared_teacher and model["image_size"] == 512 and model["lora_rank"] == 32
    assert load_student_recipe(recipe, ["train.sharding=fsdp"]).train.sharding == "fsdp"
    with pytest.raises(ValueError, match="sharding"):
        load_student_recipe(recipe, ["train.sharding=zero3"])
