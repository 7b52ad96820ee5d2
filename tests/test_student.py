from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from varestorer.models.student import KEPT_BIT_MARGIN, Student, bits_to_codes_straight_through
from varestorer.models.student_config import StudentConfig
from varestorer.models.teacher import Teacher
from varestorer.nn.lora import lora_parameters
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.training.losses import token_kl
from varestorer.transformer.config import transformer_preset
from varestorer.transformer.model import NextScaleTransformer


def _teacher() -> tuple[MultiScaleTokenizer, NextScaleTransformer]:
    tokenizer = MultiScaleTokenizer(tokenizer_preset("tiny")).eval()
    transformer = NextScaleTransformer(transformer_preset("tiny")).eval()
    with torch.no_grad():  # Infinity-style init zeroes some output projections; make every path matter
        for param in transformer.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return tokenizer, transformer


def _student(attention: str = "full", **kw) -> tuple[Student, MultiScaleTokenizer, NextScaleTransformer]:
    tokenizer, transformer = _teacher()
    config = StudentConfig(image_size=64, scale=4, attention=attention, lora_rank=2, **kw)
    return Student.from_teacher(Teacher(tokenizer, transformer), config), tokenizer, transformer


def _perturb_adapters(student: Student) -> None:
    with torch.no_grad():
        for p in lora_parameters(student.transformer):
            p.normal_(0, 0.2)


def _saved_adapter_student(tmp_path: Path) -> Student:
    """A tiny student with non-zero adapters, saved as tmp_path/student next to its teacher tmp_path/teacher."""
    student, tokenizer, transformer = _student()
    _perturb_adapters(student)
    Teacher(tokenizer, transformer).save_pretrained(tmp_path / "teacher")
    student.config = replace(student.config, teacher=str(tmp_path / "teacher"))
    student.save_pretrained(tmp_path / "student")
    return student


def test_one_step_shapes_and_range() -> None:
    student, _, _ = _student()
    lq = torch.rand(2, 3, 16, 16)
    sr = student.eval()(lq)
    assert sr.shape == (2, 3, 64, 64) and sr.min() >= 0 and sr.max() <= 1
    assert torch.equal(sr, student(lq))  # deterministic
    assert (student.scale, student.input_size) == (4, 16)


def test_kl_is_zero_when_student_equals_teacher_on_identical_inputs() -> None:
    student, tokenizer, transformer = _student(attention="causal")
    gt = torch.rand(1, 3, 64, 64)
    tokens = tokenizer.tokenize(gt * 2 - 1, student.schedule)
    with torch.no_grad():
        teacher_logits = transformer(tokens.inputs, student.schedule, None, mask="causal")
        student_inputs = student.lq_to_inputs(gt)  # LQ at the working size: no resize, same pyramid
        assert torch.allclose(student_inputs, tokens.inputs)
        student_logits = student.transformer(student_inputs, student.schedule, None, mask="causal")
    assert token_kl(teacher_logits, student_logits).item() == pytest.approx(0.0, abs=1e-6)
    _perturb_adapters(student)
    with torch.no_grad():
        moved = student.transformer(student_inputs, student.schedule, None, mask="causal")
    assert token_kl(teacher_logits, moved).item() > 1e-4


def test_gradients_reach_only_trainable_parameters() -> None:
    student, _, _ = _student()
    student.train()
    _perturb_adapters(student)  # B = 0 would block the gradient to A
    out = student.restore(torch.rand(2, 3, 16, 16))
    (out.sr.square().mean() + out.logits.square().mean()).backward()
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("encoder.") for n in trainable)
    for name, param in student.named_parameters():
        if name in trainable:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
    assert any(p.grad.abs().sum() > 0 for n, p in student.named_parameters() if n.startswith("encoder."))
    frac = sum(p.numel() for p in lora_parameters(student)) / sum(p.numel() for p in student.transformer.parameters())
    assert 0 < frac < 0.5
    with_decoder, _, _ = _student(train_decoder=True)
    assert all(p.requires_grad for p in with_decoder.decoder.parameters())
    assert any(k.startswith("decoder.") for k in with_decoder.trainable_state_dict())


def test_straight_through_is_hard_forward_soft_backward() -> None:
    logits = torch.randn(1, 5, 4, 2, requires_grad=True)
    codes = bits_to_codes_straight_through(logits, (-0.5, 0.5))
    assert torch.allclose(codes.detach().abs(), torch.full_like(codes, 0.5), atol=1e-6)  # hard values
    codes.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_merged_forward_equals_adapter_forward_and_round_trips(tmp_path) -> None:
    student, tokenizer, transformer = _student()
    _perturb_adapters(student)
    student.eval()
    lq = torch.rand(1, 3, 16, 16)
    merged = student.merged()
    assert not lora_parameters(merged)
    assert torch.allclose(merged(lq), student(lq), atol=1e-5)
    merged.save_pretrained(tmp_path / "export")
    assert torch.allclose(Student.from_pretrained(tmp_path / "export")(lq), student(lq), atol=1e-5)
    # adapter checkpoint: stores only trainable tensors and rebuilds from the teacher folder
    Teacher(tokenizer, transformer).save_pretrained(tmp_path / "teacher")
    student.config = replace(student.config, teacher="../teacher")
    student.save_pretrained(tmp_path / "student")
    again = Student.from_pretrained(tmp_path / "student")
    assert torch.allclose(again(lq), student(lq), atol=1e-6)


def test_full_and_causal_attention_differ() -> None:
    full, _, _ = _student("full")
    causal, _, _ = _student("causal")
    causal.load_state_dict(full.state_dict())
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        inputs = full.lq_to_inputs(lq)
        a = full.transformer(inputs, full.schedule, None, mask="full")
        b = causal.transformer(inputs, causal.schedule, None, mask="causal")
    assert not torch.allclose(a, b, atol=1e-4)


def test_bad_configs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="multiple of stride"):
        StudentConfig(tokenizer=tokenizer_preset("tiny"), transformer=transformer_preset("tiny"), image_size=72)
    student, _, _ = _student()
    with pytest.raises(ValueError, match="expected LQ images"):
        student(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="distilled without prompts"):
        student.encode_prompts(["a cat"])


def test_export_cli_merges_and_refuses_overwrite(tmp_path, capsys) -> None:
    from varestorer.cli.main import main

    student = _saved_adapter_student(tmp_path)
    assert main(["export", str(tmp_path / "student"), "-o", str(tmp_path / "out"), "--merge"]) == 0
    exported = Student.from_pretrained(tmp_path / "out")
    assert exported.config.merged and exported.config.teacher is None
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(exported(lq), student.eval()(lq), atol=1e-5)
    assert main(["export", str(tmp_path / "student"), "-o", str(tmp_path / "out"), "--merge"]) == 2
    assert "exists" in capsys.readouterr().err
    half_args = [
        "--merge",
        "--dtype",
        "float16",
        "--color-fix",
        "wavelet",
        "--color-fix-levels",
        "3",
        "--tile-overlap",
        "2",
    ]
    assert main(["export", str(tmp_path / "student"), "-o", str(tmp_path / "half"), *half_args]) == 0
    half = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half < 0.6 * (tmp_path / "out" / "model.safetensors").stat().st_size
    with torch.no_grad():
        restored = Student.from_pretrained(tmp_path / "half")(lq)
    assert restored.dtype == torch.float32 and (restored - exported(lq)).abs().mean() < 0.05
    from varestorer.inference.restorer import Restorer

    assert Restorer.from_pretrained(tmp_path / "half").color_fix == "wavelet"  # the checkpoint's recommendation
    assert Restorer.from_pretrained(tmp_path / "half").color_fix_levels == 3  # with its levels
    assert Restorer.from_pretrained(tmp_path / "half", color_fix_levels=2).color_fix_levels == 2
    assert Restorer.from_pretrained(tmp_path / "out").color_fix_levels == 5  # StableSR's, when the config is silent
    assert Restorer.from_pretrained(tmp_path / "half", color_fix="none").color_fix == "none"
    assert Restorer.from_pretrained(tmp_path / "out").color_fix == "none"
    assert Restorer.from_pretrained(tmp_path / "half").tile_overlap == 2  # also the checkpoint's own
    assert Restorer.from_pretrained(tmp_path / "out").tile_overlap is None  # a quarter of the tile
    bad = ["export", str(tmp_path / "student"), "-o", str(tmp_path / "bad"), "--merge", "--tile-overlap", "99"]
    assert main(bad) == 2 and "tile_overlap must be in" in capsys.readouterr().err
    bad = ["export", str(tmp_path / "student"), "-o", str(tmp_path / "bad"), "--merge", "--color-fix-levels", "0"]
    assert main(bad) == 2 and "color_fix_levels must be >= 1" in capsys.readouterr().err
    cut = ["export", str(tmp_path / "student"), "-o", str(tmp_path / "cut"), "--merge", "--predicted-scales", "2"]
    assert main(cut) == 0
    assert Student.from_pretrained(tmp_path / "cut").predicted_schedule == student.schedule[:2]
    bad = ["export", str(tmp_path / "student"), "-o", str(tmp_path / "bad"), "--merge", "--predicted-scales", "99"]
    assert main(bad) == 2 and "predicted_scales must be in [1, " in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing written


def test_paper_lora_budget_on_infinity_2b() -> None:
    """Rank-32 LoRA on the 32 blocks' attention projections: the paper's 27.3M / 1.2% (§4.1)."""
    from varestorer.models.student_config import STUDENT_PRESETS

    with torch.device("meta"):
        student = Student(STUDENT_PRESETS["infinity-2b"])
    lora = sum(p.numel() for p in lora_parameters(student.transformer))
    base = sum(p.numel() for n, p in student.transformer.named_parameters() if ".lora_" not in n)
    assert lora == 27_262_976
    assert round(100 * lora / base, 1) == 1.2


def test_lq_conditioned_var_starts_as_the_teacher_and_sampling_matches_teacher_forcing() -> None:
    from varestorer.models.lq_conditioned import LQConditionedVAR

    tokenizer, transformer = _teacher()
    config = StudentConfig(image_size=64, scale=4, lora_rank=2)
    model = LQConditionedVAR.from_teacher(Teacher(tokenizer, transformer), config).eval()
    with torch.no_grad():
        for layer in model.control.zero:
            layer.weight.normal_(0, 0.05)
        lq = torch.rand(2, 3, 16, 16)
        out = model.restore(lq)
        # teacher-forcing the sampled bits reproduces the logits of the KV-cached loop
        bits = [chunk.argmax(-1) for chunk in out.logits.split([h * w for h, w in model.schedule], dim=1)]
        inputs = model.base.quantizer.teacher_forcing_inputs(bits, model.schedule, model.schedule[-1])
        forced = model.teacher_forced_logits(inputs, lq)
    assert torch.allclose(forced, out.logits, atol=1e-4)
    assert not isinstance(model, Student)  # a composition: model.base is the student-shaped LQ path


def test_lq_conditioned_var_round_trips_and_reads_the_subclass_layout(tmp_path) -> None:
    from varestorer.models.lq_conditioned import LQConditionedVAR, _legacy_keys

    tokenizer, transformer = _teacher()
    config = StudentConfig(image_size=64, scale=4, lora_rank=2)
    model = LQConditionedVAR.from_teacher(Teacher(tokenizer, transformer), config).eval()
    lq = torch.rand(1, 3, 16, 16)
    merged = model.merged()
    merged.save_pretrained(tmp_path / "merged")
    assert torch.allclose(LQConditionedVAR.from_pretrained(tmp_path / "merged")(lq), model(lq), atol=1e-5)
    # the keys of the earlier LQConditionedVAR(Student) checkpoints map onto this layout
    old = {
        k.replace("control.embed.", "control_embed.").replace("control.zero.", "control_zero.").removeprefix("base."): v
        for k, v in merged.state_dict().items()
    }
    assert set(_legacy_keys(old)) == set(merged.state_dict())


def test_the_quantiser_keeps_the_residuals_whose_signs_are_the_bits() -> None:
    tokenizer, _ = _teacher()
    f = torch.randn(2, tokenizer.quantizer.token_dim, 4, 4)
    schedule = ((1, 1), (2, 2), (4, 4))
    tokens = tokenizer.quantizer.quantize(f, schedule, with_residuals=True)
    assert tokenizer.quantizer.quantize(f, schedule).residuals is None  # only when asked
    assert tokens.residuals is not None and len(tokens.residuals) == len(schedule)
    for residual, labels in zip(tokens.residuals, tokens.labels, strict=True):
        assert residual.shape == labels.shape
        assert torch.equal((residual > 0).long(), labels)
        torch.testing.assert_close(residual.norm(dim=-1), torch.ones(residual.shape[:2]))


def test_the_lq_residual_control_starts_as_the_student_without_it_and_learns(tmp_path) -> None:
    torch.manual_seed(0)
    plain, tokenizer, transformer = _student(lq_bit_skip=True, fidelity_path=True)
    _perturb_adapters(plain)
    with_control = Student(replace(plain.config, lq_residual_control=True))
    missing, unexpected = with_control.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("lq_control.") for k in missing)
    lq = torch.rand(2, 3, 16, 16)
    plain.eval(), with_control.eval()
    torch.testing.assert_close(with_control(lq), plain(lq))  # zero-initialised: the same function
    encoding = with_control.encode(with_control.preclean(lq))
    with_control.predict(encoding).square().mean().backward()
    zero = with_control.lq_control.zero[0]
    assert zero.weight.grad is not None and zero.weight.grad.abs().sum() > 0  # trainable, and reached
    with torch.no_grad():
        for layer in with_control.lq_control.zero:
            layer.weight.normal_(0, 0.5)
    assert not torch.allclose(with_control.predict(encoding), plain.predict(plain.encode(lq)))  # it reads the LQ
    merged = with_control.merged()
    merged.save_pretrained(tmp_path / "export")
    again = Student.from_pretrained(tmp_path / "export").eval()
    torch.testing.assert_close(again(lq), with_control(lq), atol=1e-5, rtol=1e-5)  # exported with the branch


def test_predicted_scales_keep_the_lq_bits_of_the_finer_scales_and_never_read_them(tmp_path) -> None:
    torch.manual_seed(0)
    full, _, _ = _student(lq_bit_skip=True, lq_residual_control=True)
    _perturb_adapters(full)
    with torch.no_grad():
        for layer in full.lq_control.zero:
            layer.weight.normal_(0, 0.5)
    cut = Student(replace(full.config, predicted_scales=len(full.schedule) - 1)).eval()
    cut.load_state_dict(full.state_dict())
    assert cut.predicted_schedule == full.schedule[:-1]
    lq = torch.rand(2, 3, 16, 16)
    encoding = cut.encode(cut.preclean(lq))
    with torch.no_grad():
        logits = cut.predict(encoding)
    h, w = full.schedule[-1]
    kept, lq_bits = logits[:, -h * w :], encoding.tokens.labels[-1]
    assert logits.shape == full.eval().predict(encoding).shape
    assert torch.equal(kept.argmax(-1), lq_bits) and torch.all((kept[..., 1] - kept[..., 0]).abs() == KEPT_BIT_MARGIN)
    # The transformer reads the first scales only: other finest-scale inputs and residuals change nothing.
    tokens = encoding.tokens
    changed = replace(
        tokens,
        inputs=torch.cat([tokens.inputs[:, : -h * w], torch.randn_like(tokens.inputs[:, -h * w :])], 1),
        residuals=[*tokens.residuals[:-1], torch.randn_like(tokens.residuals[-1])],
    )
    with torch.no_grad():
        again = cut.predict(encoding._replace(tokens=changed))
    torch.testing.assert_close(again[:, : -h * w], logits[:, : -h * w])
    with torch.no_grad():  # and it is a shorter pass than the full student's, not a slice of it
        assert not torch.allclose(full.predict(encoding)[:, : -h * w], logits[:, : -h * w], atol=1e-4)
    # No gradient reaches the kept rows' skip gain; the predicted rows' gains learn.
    cut.train()
    cut.restore(lq).sr.square().mean().backward()
    assert float(cut.lq_bit_gain.grad[-1]) == 0.0 and cut.lq_bit_gain.grad[:-1].abs().sum() > 0
    merged = cut.merged()
    merged.save_pretrained(tmp_path / "export")
    loaded = Student.from_pretrained(tmp_path / "export").eval()
    assert loaded.config.predicted_scales == len(full.schedule) - 1
    torch.testing.assert_close(loaded(lq), cut.eval()(lq), atol=1e-5, rtol=1e-5)


def test_bad_predicted_scales_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="predicted_scales must be >= 1"):
        _student(predicted_scales=0)
    with pytest.raises(ValueError, match=r"predicted_scales must be in \[1, \d+\]"):
        _student(predicted_scales=99)
