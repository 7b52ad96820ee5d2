"""The loss as registered terms: the same losses and gradients as the hard-coded chain before it, and a new
term in two places (its class and its registry entry) that the training module sums and the memory model traces."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from varestorer.archs.srvgg import SRVGGConfig
from varestorer.benchmark.memory_model import predict_memory, trace_activations
from varestorer.benchmark.train_setup import DistillSetup, build_distillation, fixed_offsets, preset_student
from varestorer.families import families
from varestorer.models.student import Student
from varestorer.models.student_config import STUDENT_PRESETS
from varestorer.models.teacher import Teacher
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.training.config import TrainConfig
from varestorer.training.distillation import StudentDistillation
from varestorer.training.loss_terms import (
    LOSS_TERMS,
    DISTSTerm,
    GANTerm,
    GTBitsTerm,
    KLTerm,
    LatentTerm,
    LossTerm,
    LPIPSTerm,
    MSETerm,
    StepTensors,
    build_loss_terms,
)
from varestorer.training.losses import bitwise_cross_entropy, scale_weights, token_kl
from varestorer.training.student_recipe import parse_student_recipe
from varestorer.training.train_student import skip_param_groups
from varestorer.transformer.model import NextScaleTransformer

BEFORE = json.loads((Path(__file__).parent / "data" / "distillation_step_de90701.json").read_text())
"""One forward/backward of the tiny distillation below with the code at de90701 (StudentDistillation's
chain of ifs over LossConfig(lambda_kl=0.1, kl_temperature=2, lambda_perceptual=0.25, lambda_mse=0.5,
lambda_dists=0.25, lambda_latent=1, perceptual_crop=32), LPIPS and DISTS with random VGG weights): the loss,
the logs and, per trainable tensor, the sum and the absolute sum of its gradient; and the names of the tensors
the Trainer checkpoints (trainable parameters and every buffer; the LQ-conditioned model's with LPIPS and DISTS
attached as before)."""


def _student(kind: str) -> tuple[Student, Teacher]:
    torch.manual_seed(0)
    config = replace(
        STUDENT_PRESETS["tiny"],
        precleaner=SRVGGConfig(num_feat=8, num_conv=2, upscale=1),
        lq_bit_skip=kind == "student",
        fidelity_path=kind == "student",
        train_decoder=True,
    )
    teacher = Teacher(MultiScaleTokenizer(config.tokenizer), NextScaleTransformer(config.transformer))
    model_class = {e.name: e.model_class for e in families(trains="student").values()}[kind]()
    student = model_class.from_teacher(teacher, config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the teacher: every path carries a gradient
        for param in student.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    return student, teacher


def _step(module: StudentDistillation, student: Student) -> dict:
    module.train()
    generator = torch.Generator().manual_seed(3)
    gt, lq = torch.rand(2, 3, 64, 64, generator=generator), torch.rand(2, 3, 16, 16, generator=generator)
    torch.manual_seed(4)  # the crop of LPIPS and DISTS
    loss, logs = module({"gt": gt, "lq": lq, "caption": ["", ""]}, 0)
    loss.backward()
    grads = {
        n: [float(p.grad.sum()), float(p.grad.abs().sum())] for n, p in student.named_parameters() if p.grad is not None
    }
    return {"loss": float(loss.detach()), "logs": {k: float(v) for k, v in logs.items()}, "grads": grads}


def _checkpoint_names(module: StudentDistillation) -> set[str]:
    """What ``Trainer._trainable_tensors`` saves and a resume needs."""
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return names | {n for n, _ in module.named_buffers()}


def _assert_same(now: dict, before: dict) -> None:
    assert now["loss"] == pytest.approx(before["loss"], rel=1e-5)
    assert now["logs"] == pytest.approx(before["logs"], rel=1e-5)
    assert now["grads"].keys() == before["grads"].keys()
    for name, (total, absolute) in before["grads"].items():
        assert now["grads"][name][1] == pytest.approx(absolute, rel=1e-4, abs=1e-9), name
        assert abs(now["grads"][name][0] - total) <= 1e-4 * absolute + 1e-9, name


def test_the_terms_give_the_losses_and_gradients_of_the_chain_before() -> None:
    student, teacher = _student("student")
    latent = LatentTerm(1.0, teacher=Student(student.config))  # drawn where the old test drew its latent teacher
    torch.manual_seed(2)
    terms = [MSETerm(0.5), KLTerm(0.1, temperature=2.0), latent]
    terms += [LPIPSTerm(0.25, crop=32, pretrained=False), DISTSTerm(0.25, crop=32, pretrained=False)]
    module = StudentDistillation(student, teacher.tokenizer, teacher.transformer, terms, use_prompt=False)
    assert _checkpoint_names(module) == set(BEFORE["student"]["checkpoint_names"])  # runs checkpointed before resume
    _assert_same(_step(module, student), BEFORE["student"])


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_the_gt_bits_term_is_the_ce_to_the_gt_bits_and_skips_the_decoder_when_nothing_reads_the_image() -> None:
    student, teacher = _student("student")
    terms = [GTBitsTerm(1.0, tokens="teacher"), KLTerm(0.1)]
    module = StudentDistillation(student, teacher.tokenizer, teacher.transformer, terms, use_prompt=False).train()
    decoded, predicted = _count_calls(student.decoder), _count_calls(student.transformer)
    generator = torch.Generator().manual_seed(3)
    gt, lq = torch.rand(2, 3, 64, 64, generator=generator), torch.rand(2, 3, 16, 16, generator=generator)
    loss, logs = module({"gt": gt, "lq": lq, "caption": ["", ""]}, 0)
    assert not decoded and len(predicted) == 2  # the student's predict stage and the teacher's pass; no decoder
    with torch.no_grad():  # the target, computed here from the teacher's tokenizer on its own
        labels = torch.cat(
            teacher.tokenizer.quantizer.quantize(teacher.tokenizer.encoder(gt * 2 - 1), student.schedule).labels, 1
        )
        logits = student.predict(student.encode(student.preclean(lq)))
        ce, accuracy = bitwise_cross_entropy(logits, labels, scale_weights(student.schedule, True))
    assert torch.allclose(logs["gt_bits"], ce, rtol=1e-5) and torch.allclose(logs["bit_accuracy"], accuracy)
    assert torch.allclose(loss.detach(), ce + 0.1 * logs["kl"], rtol=1e-5)
    assert {f"bit_gain_{h}x{w}" for h, w in student.schedule} <= set(logs)
    with torch.no_grad():  # the LQ bits win every logit: the student's bits are the LQ's, no gain anywhere
        student.lq_bit_gain.fill_(1e4)
    _, logs = module({"gt": gt, "lq": lq, "caption": ["", ""]}, 0)
    assert all(float(logs[f"bit_gain_{h}x{w}"]) == 0.0 for h, w in student.schedule)


def test_the_gt_bits_are_the_students_own_by_default() -> None:
    """The target is the GT under the student's own encoder (here trained apart from the teacher's)."""
    student, teacher = _student("student")
    with torch.no_grad():
        next(student.encoder.parameters()).mul_(-1)  # its own encoder now differs from the teacher tokenizer's
    module = StudentDistillation(student, teacher.tokenizer, teacher.transformer, [GTBitsTerm(1.0)], use_prompt=False)
    gt, lq = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 16, 16)
    _, logs = module.train()({"gt": gt, "lq": lq, "caption": ["", ""]}, 0)
    assert student.training and student.encoder.training  # its encoder was put back in training mode
    with torch.no_grad():
        student.eval()
        own = torch.cat(student.encode(gt).tokens.labels, 1)
        theirs = torch.cat(
            teacher.tokenizer.quantizer.quantize(teacher.tokenizer.encoder(gt * 2 - 1), student.schedule).labels, 1
        )
        logits = student.predict(student.encode(student.preclean(lq)))
    weights = scale_weights(student.schedule, True)
    assert torch.allclose(logs["gt_bits"], bitwise_cross_entropy(logits, own, weights)[0], rtol=1e-5)
    assert not torch.equal(own, theirs)


def test_the_bit_terms_read_only_the_scales_a_predicted_scales_student_predicts() -> None:
    """The finer scales' rows are the LQ's bits at a fixed margin: no gradient, and not the CE's or the KL's."""
    full, teacher = _student("student")
    student = Student(replace(full.config, predicted_scales=len(full.schedule) - 1))
    student.load_state_dict(full.state_dict())
    rows = sum(h * w for h, w in student.predicted_schedule)
    terms = [GTBitsTerm(1.0, tokens="teacher"), KLTerm(0.1)]
    module = StudentDistillation(student, teacher.tokenizer, teacher.transformer, terms, use_prompt=False).train()
    generator = torch.Generator().manual_seed(3)
    gt, lq = torch.rand(2, 3, 64, 64, generator=generator), torch.rand(2, 3, 16, 16, generator=generator)
    _, logs = module({"gt": gt, "lq": lq, "caption": ["", ""]}, 0)
    with torch.no_grad():
        labels = torch.cat(
            teacher.tokenizer.quantizer.quantize(teacher.tokenizer.encoder(gt * 2 - 1), student.schedule).labels, 1
        )
        logits = student.predict(student.encode(student.preclean(lq)))
        ce, _ = bitwise_cross_entropy(
            logits[:, :rows], labels[:, :rows], scale_weights(student.predicted_schedule, True)
        )
        teacher_logits = module.teacher_logits(gt, None)  # the teacher's block-causal pass stops there too
        assert teacher_logits.shape[1] == rows
        whole = teacher.transformer(module.teacher.tokens(gt, student).inputs, student.schedule, None, mask="causal")
        torch.testing.assert_close(teacher_logits, whole[:, :rows])
        kl = token_kl(teacher_logits, logits[:, :rows])
    assert torch.allclose(logs["gt_bits"], ce, rtol=1e-5) and torch.allclose(logs["kl"], kl, rtol=1e-5)
    h, w = student.schedule[-1]
    assert f"bit_gain_{h}x{w}" not in logs and {f"bit_gain_{h}x{w}" for h, w in student.predicted_schedule} <= set(logs)


def test_a_bit_term_beside_an_image_term_shares_one_pass() -> None:
    student, teacher = _student("student")
    terms = [MSETerm(0.5), GTBitsTerm(1.0)]
    module = StudentDistillation(student, teacher.tokenizer, teacher.transformer, terms, use_prompt=False).train()
    decoded, predicted = _count_calls(student.decoder), _count_calls(student.transformer)
    batch = {"gt": torch.rand(2, 3, 64, 64), "lq": torch.rand(2, 3, 16, 16), "caption": ["", ""]}
    loss, logs = module(batch, 0)
    assert len(decoded) == 1 and len(predicted) == 1
    assert torch.allclose(loss.detach(), 0.5 * logs["mse"] + logs["gt_bits"], rtol=1e-6)


def test_the_image_terms_read_the_output_after_the_loss_colour_fix() -> None:
    """``[job] loss_color_fix``: the image terms see the output under the fix it ships with (its low frequencies
    the LQ's), the gradient passes through the fix, and a bad name fails when the module is built."""
    from varestorer.inference.color import wavelet_color_fix, wavelet_low_frequency

    student, teacher = _student("student")
    generator = torch.Generator().manual_seed(3)
    batch = {"gt": torch.rand(2, 3, 64, 64, generator=generator), "lq": torch.rand(2, 3, 16, 16, generator=generator)}
    values = {}
    for fix in ("none", "wavelet"):
        module = StudentDistillation(
            student, teacher.tokenizer, teacher.transformer, [MSETerm(1.0)], use_prompt=False, color_fix=fix
        ).train()
        tensors = StepTensors(module, {**batch, "caption": ["", ""]}, None)
        values[fix] = tensors.sr
    raw = values["none"]
    assert torch.allclose(values["wavelet"], wavelet_color_fix(raw, batch["lq"]), atol=1e-6)
    lq_low = wavelet_low_frequency(torch.nn.functional.interpolate(batch["lq"], size=64, mode="bicubic"))
    assert (wavelet_low_frequency(values["wavelet"]) - lq_low).abs().max() < 0.05
    assert (wavelet_low_frequency(raw) - lq_low).abs().max() > 0.1  # the raw output's are not the LQ's
    student.config = replace(student.config, color_fix_levels=3)  # the levels the model ships with count
    module = StudentDistillation(
        student, teacher.tokenizer, teacher.transformer, [MSETerm(1.0)], use_prompt=False, color_fix="wavelet"
    ).train()
    three = StepTensors(module, {**batch, "caption": ["", ""]}, None).sr
    assert torch.allclose(three, wavelet_color_fix(raw, batch["lq"], levels=3), atol=1e-6)
    assert not torch.allclose(three, values["wavelet"], atol=1e-3)
    values["wavelet"].square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="color fix"):
        StudentDistillation(
            student, teacher.tokenizer, teacher.transformer, [MSETerm(1.0)], use_prompt=False, color_fix="ycbcr"
        )
    with pytest.raises(ValueError, match="loss_color_fix"):
        parse_student_recipe({"job": {"loss_color_fix": "ycbcr"}})


def _gan_step(start_step: int) -> tuple[StudentDistillation, dict, dict]:
    student, teacher = _student("student")
    torch.manual_seed(5)
    terms = [MSETerm(1.0), GANTerm(0.1, crop=32, channels=8, layers=2, start_step=start_step)]
    module = StudentDistillation(student, teacher.tokenizer, teacher.transformer, terms, use_prompt=False).train()
    generator = torch.Generator().manual_seed(3)
    batch = {"gt": torch.rand(2, 3, 64, 64, generator=generator), "lq": torch.rand(2, 3, 16, 16, generator=generator)}
    torch.manual_seed(4)
    loss, logs = module({**batch, "caption": ["", ""]}, 10)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return module, logs, grads


def test_the_gan_term_trains_its_discriminator_and_pushes_the_student_after_its_start() -> None:
    before, logs_before, grads_before = _gan_step(start_step=11)  # step 10: the generator term is not on yet
    after, logs_after, grads_after = _gan_step(start_step=10)
    assert float(logs_before["gan"]) == 0.0 and float(logs_after["gan"]) != 0.0
    discriminator = {n for n in grads_after if n.startswith("terms.gan.discriminator.")}
    assert discriminator and discriminator <= set(grads_before)  # it learns from step 0
    for name in discriminator:  # its own hinge loss alone: the generator term reaches the image, not D
        assert torch.allclose(grads_after[name], grads_before[name], rtol=1e-5, atol=1e-8), name
    assert float(logs_after["gan_discriminator"]) == pytest.approx(float(logs_before["gan_discriminator"]), rel=1e-6)
    decoder = [n for n in grads_after if n.startswith("student.decoder.")]
    assert decoder and any(not torch.allclose(grads_after[n], grads_before[n]) for n in decoder)
    # the Trainer's groups (skip gains at 10x) hold the discriminator, so it is optimised and checkpointed
    groups = skip_param_groups(after, after.student, 10.0)
    assert groups is not None
    grouped = {id(p) for group in groups for p in group["params"]}
    assert len(grouped) == sum(1 for p in after.parameters() if p.requires_grad)
    (apart,) = [group for group in groups if group.get("clip_apart")]  # its gradients do not clip the student's
    assert {id(p) for p in apart["params"]} == {id(p) for p in after.terms["gan"].discriminator.parameters()}
    assert skip_param_groups(after, after.student, 1.0) is not None  # a group of its own at any scale


def test_the_gan_terms_discriminator_learns_to_tell_the_gt_from_the_output() -> None:
    module, _, _ = _gan_step(start_step=10**9)  # the discriminator alone learns
    discriminator = module.terms["gan"].discriminator
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(7)
    batch = {"gt": torch.rand(2, 3, 64, 64, generator=generator), "lq": torch.rand(2, 3, 16, 16, generator=generator)}
    batch["gt"] = (batch["gt"] > 0.5).float()  # a binary texture the student's smooth output lacks
    margins = []
    for _ in range(30):
        optimizer.zero_grad()
        loss, logs = module({**batch, "caption": ["", ""]}, 0)
        loss.backward()  # only D is stepped
        optimizer.step()
        margins.append(float(logs["gan_real_score"] - logs["gan_fake_score"]))
    assert margins[0] < 0.5 < margins[-1], margins


def test_the_no_distill_model_trains_with_its_own_cross_entropy_as_before() -> None:
    student, teacher = _student("lq_conditioned_var")
    terms = build_loss_terms(parse_student_recipe({}).loss, student)  # the recipe's terms give way to its objective
    assert [term.name for term in terms] == ["cross_entropy"]
    module = StudentDistillation(student, teacher.tokenizer, teacher.transformer, terms, use_prompt=False)
    assert _checkpoint_names(module) <= set(BEFORE["lq_conditioned_var"]["checkpoint_names"])
    _assert_same(_step(module, student), BEFORE["lq_conditioned_var"])


class EdgeTerm(LossTerm):
    """A new term, as a user would add one: the mean |horizontal gradient| difference of SR and GT."""

    name = "edge"

    def __init__(self, weight: float, *, power: float = 1.0, **common) -> None:
        super().__init__(weight, **common)
        self.power = power

    def forward(self, step: StepTensors) -> torch.Tensor:
        sr_dx, gt_dx = step.sr.diff(dim=-1), step.gt.diff(dim=-1)
        return (sr_dx - gt_dx).abs().pow(self.power).mean()


REGISTRY = {**LOSS_TERMS, "edge": EdgeTerm}  # place 2 (in the package: an entry of LOSS_TERMS)


def _setup(loss_table: dict, model: dict | None = None) -> DistillSetup:
    recipe = parse_student_recipe({"loss": loss_table, "model": model or {}}, registry=REGISTRY)
    return DistillSetup(preset_student("tiny", recipe.model), recipe.loss, TrainConfig(batch_size=2), name="tiny")


def test_a_new_term_is_a_class_and_a_registry_entry_and_a_recipe_line() -> None:
    plain = {"mse": {"weight": 0.5}, "kl": {"weight": 0.1}}
    with pytest.raises(ValueError, match="unknown loss term 'edge'"):
        parse_student_recipe({"loss": {**plain, "edge": {"weight": 0.2}}})  # not in the package's registry
    setup = _setup({**plain, "edge": {"weight": 0.2, "power": 2.0}})
    assert [(t.name, t.weight, t.options) for t in setup.loss][-1] == ("edge", 0.2, {"power": 2.0})
    torch.manual_seed(0)
    module = build_distillation(setup, registry=REGISTRY)
    batch = {"gt": torch.rand(2, 3, 64, 64), "lq": torch.rand(2, 3, 16, 16), "caption": ["", ""]}
    loss, logs = module.train()(batch, 0)
    assert set(logs) == {"mse", "kl", "edge"} and logs["edge"] > 0
    expected = 0.5 * logs["mse"] + 0.1 * logs["kl"] + 0.2 * logs["edge"]
    assert torch.allclose(loss.detach(), expected, rtol=1e-6)  # summed with its weight
    # the memory model traces the same module: the new term's saved tensors (its (B, 3, S, S - 1) differences)
    mse = {"mse": {"weight": 0.5}}  # (no KL: no teacher pass to trace, half the time)
    without = trace_activations(_setup(mse), build_distillation(_setup(mse), "meta", crop_offsets=fixed_offsets))
    edge = _setup({**mse, "edge": {"weight": 0.2, "power": 2.0}})
    with_edge = trace_activations(edge, build_distillation(edge, "meta", registry=REGISTRY, crop_offsets=fixed_offsets))
    assert with_edge.other - without.other >= 2 * 3 * 64 * 63 * 4


def test_the_memory_model_counts_the_gan_terms_discriminator() -> None:
    mse = {"mse": {"weight": 0.5}}
    gan = {**mse, "gan": {"weight": 0.1, "crop": 32, "channels": 8, "layers": 2}}
    plain, adversarial = predict_memory(_setup(mse)), predict_memory(_setup(gan))
    discriminator = sum(p.numel() for p in GANTerm(0.1, channels=8, layers=2).discriminator.parameters())
    extra = adversarial.parts["trainable_states"] - plain.parts["trainable_states"]
    assert extra == discriminator * 4 * (1 + 1 + 2)  # fp32 weight, gradient, Adam's two moments (no EMA here)
    assert adversarial.parts["activations_other"] > plain.parts["activations_other"]  # D on the GT and on sr


def test_the_memory_model_expresses_the_shipped_defaults_options() -> None:
    """lq_bit_skip, fidelity_path, DISTS and the latent term (which the old TrainSetting could not say)."""
    base = {"mse": {"weight": 0.5}}
    plain = predict_memory(_setup(base))
    v2 = _setup(
        {**base, "latent": {"weight": 0.5}, "dists": {"weight": 0.25, "crop": 32}},
        {"lq_bit_skip": True, "fidelity_path": True},
    )
    assert v2.student.lq_bit_skip and v2.student.fidelity_path
    shipped = predict_memory(v2)
    assert shipped.parts["lpips"] > plain.parts["lpips"]  # DISTS's VGG and weights, and the latent teacher
    assert shipped.parts["trainable_states"] > plain.parts["trainable_states"]  # the skip gains and fidelity weights
    assert shipped.parts["activations_other"] > plain.parts["activations_other"]
