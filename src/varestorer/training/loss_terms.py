"""The student's training loss as a list of registered terms, each ``weight * term(step)``.

A recipe's ``[loss]`` table names the terms and their options, one sub-table per term::

    [loss.mse]
    weight = 0.5
    [loss.kl]
    weight = 0.1
    temperature = 1.0
    [loss.lpips]
    weight = 0.25
    crop = 128

:data:`LOSS_TERMS` is the one registry of term classes (STYLE.md §3); ``StudentDistillation`` sums the terms
it is given (training/distillation.py), and the memory model and the training bench trace and time that same
module. A new term is a :class:`LossTerm` subclass and its registry entry; a recipe line uses it.

Terms read what they need from a :class:`StepTensors`, which computes each shared quantity once per step
and only when a term asks: the student's output, the teacher's logits, the crops LPIPS and DISTS share.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varestorer.inference.color import ColorFix, apply_color_fix
from varestorer.models.student import LQEncoding, Student, StudentOutput
from varestorer.tokenizer.quantizer import MultiScaleTokens
from varestorer.training.discriminator import PatchDiscriminator, hinge_discriminator_loss, hinge_generator_loss
from varestorer.training.losses import accuracy_per_scale, bitwise_cross_entropy, scale_weights, token_kl
from varestorer.training.teacher_pass import eval_mode

if TYPE_CHECKING:
    from varestorer.tokenizer.scales import Schedule
    from varestorer.training.teacher_pass import TeacherPass
    from varestorer.transformer.text import TextCondition

CropOffsets = Callable[[int, int], tuple[int, int]]
"""(height range, width range) -> (top, left) of a crop window."""


def random_offsets(rows: int, columns: int) -> tuple[int, int]:
    """A uniform random (top, left) in ``[0, rows) x [0, columns)`` from the global torch generator."""
    top = int(torch.randint(0, rows, ()).item())
    left = int(torch.randint(0, columns, ()).item())
    return top, left


def random_crop_pair(
    a: Tensor, b: Tensor, size: int | None, offsets: CropOffsets = random_offsets
) -> tuple[Tensor, Tensor]:
    """The same random ``size`` x ``size`` window of two (B, C, H, W) batches (whole images if None/too big)."""
    height, width = a.shape[-2:]
    if size is None or (size >= height and size >= width):
        return a, b
    top, left = offsets(height - min(size, height) + 1, width - min(size, width) + 1)
    window = (..., slice(top, top + size), slice(left, left + size))
    return a[window], b[window]


class TrainingModule(Protocol):
    """What the terms read of the training module (training/distillation.py ``StudentDistillation``)."""

    student: Student
    teacher: TeacherPass | None
    crop_offsets: CropOffsets
    color_fix: ColorFix
    color_fix_levels: int

    def teacher_logits(
        self, gt_B3HW: Tensor, text: TextCondition | None, tokens: MultiScaleTokens | None = None
    ) -> Tensor: ...


class StepTensors:
    """What the terms of one training step share, each computed on first use.

    Args:
        module: the training module (its student, teacher pass and crop offsets).
        batch: ``gt`` (B, 3, S, S) and ``lq`` (B, 3, S/s, S/s) in [0, 1].
        text: the batch's caption condition, or None.
        full_pass: some term reads the image: ``logits`` come from the whole one-step pass (else from the
            student's encode and predict stages alone).
    """

    def __init__(
        self,
        module: TrainingModule,
        batch: dict[str, Any],
        text: TextCondition | None,
        *,
        full_pass: bool = True,
        index: int = 0,
    ) -> None:
        self.module = module
        self.full_pass = full_pass
        self.index = index
        """The optimiser step this is (a term may start late, as the adversarial one)."""
        self.gt: Tensor = batch["gt"]
        self.lq: Tensor = batch["lq"]
        self.text = text
        self.logs: dict[str, Tensor] = {}
        """Extra scalars a term reports beside its value (e.g. the bit accuracy)."""
        self.own_losses: dict[str, Tensor] = {}
        """Unweighted losses of networks a term trains itself (the discriminator), added to the step's loss."""
        self._crops: dict[int | None, tuple[Tensor, Tensor]] = {}

    @cached_property
    def encoding(self) -> LQEncoding:
        """The student's encode stage on the LQ batch (its LQ latent and the LQ's own tokens)."""
        student = self.module.student
        return student.encode(student.preclean(self.lq))

    @property
    def staged(self) -> bool:
        """The student restores through Student's own stages (a wrapper, e.g. the no_distill model, has its own)."""
        return type(self.module.student).restore is Student.restore

    @cached_property
    def out(self) -> StudentOutput:
        """The student's one-step pass on the LQ batch, sharing the encode (and predict) stage already run."""
        student = self.module.student
        if not self.staged:
            return student.restore(self.lq, self.text)
        return student.restore_encoded(self.encoding, self.text, self.__dict__.get("logits"))

    @cached_property
    def logits(self) -> Tensor:
        """(B, L, d, 2) the student's bit logits: the full pass's, or its predict stage alone."""
        if self.full_pass or not self.staged:
            return self.out.logits
        return self.module.student.predict(self.encoding, self.text)

    @property
    def predicted_schedule(self) -> Schedule:
        """The scales whose bits the student predicts (all, unless ``predicted_scales``): the bit terms read
        these rows only, as the finer ones are the LQ's own bits and carry no gradient."""
        student = self.module.student
        return getattr(student, "base", student).predicted_schedule

    @property
    def predicted_rows(self) -> int:
        return sum(h * w for h, w in self.predicted_schedule)

    @cached_property
    def own_gt_tokens(self) -> MultiScaleTokens:
        """The GT batch's token pyramid under the student's own encoder and quantiser (eval mode, no gradient):
        the space of its LQ bits and of what its decoder reads."""
        student = self.module.student
        student = getattr(student, "base", student)
        if student.config.lq_encoder is not None:
            raise ValueError("the student's LQ encoder reads the LQ size: its GT tokens are the teacher's")
        with torch.no_grad(), eval_mode(student.encoder):
            return student.encode(self.gt).tokens

    @cached_property
    def gt_tokens(self) -> MultiScaleTokens:
        """The GT batch's token pyramid under the teacher's tokenizer (``inputs``, ``labels``), without gradient."""
        student, teacher = self.module.student, self.module.teacher
        if teacher is None:
            raise ValueError("the GT's tokens under the teacher's tokenizer need a teacher; this run has none")
        return teacher.tokens(self.gt, getattr(student, "base", student))

    @cached_property
    def sr(self) -> Tensor:
        """(B, 3, S, S) float32 output (unclamped while training), after the module's colour fix against the LQ
        (``[job] loss_color_fix``; none by default)."""
        sr = self.out.sr.float()
        fix = self.module.color_fix
        return sr if fix == "none" else apply_color_fix(sr, self.lq.float(), fix, levels=self.module.color_fix_levels)

    @cached_property
    def teacher_logits(self) -> Tensor:
        """(B, L', d, 2) p_T(r_k | GT tokens < k) over the predicted scales (``predicted_rows``), without gradient."""
        return self.module.teacher_logits(self.gt, self.text, self.gt_tokens)

    def crop(self, size: int | None) -> tuple[Tensor, Tensor]:
        """(sr, gt) cut to one random ``size`` window, the same window for every term that asks for ``size``."""
        if size not in self._crops:
            self._crops[size] = random_crop_pair(self.sr, self.gt, size, self.module.crop_offsets)
        return self._crops[size]

    @property
    def student_ran(self) -> bool:
        return "out" in self.__dict__


class LossTerm(nn.Module):
    """One weighted term of the loss; subclasses set ``name`` and implement :meth:`forward`.

    Constructor options after ``weight`` are keyword-only and are the term's recipe keys. ``student`` is
    the model being trained; ``pretrained`` False builds any frozen network of the term with random weights
    (benchmarks and the memory model need no fetched assets).
    """

    name: ClassVar[str]
    reads_output: ClassVar[bool] = True
    """Whether the term reads the student's image or latent (False: its bit logits at most)."""
    needs_teacher: bool = False
    """Whether the term reads the teacher (its logits or its tokenizer's GT tokens)."""

    def __init__(self, weight: float, *, student: Student | None = None, pretrained: bool = True) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, step: StepTensors) -> Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> LossTerm:
        return super().train(False)  # a term's networks are frozen: always eval


class MSETerm(LossTerm):
    """||sr - gt||^2, mean over pixels (the paper's lambda_MSE term)."""

    name = "mse"

    def forward(self, step: StepTensors) -> Tensor:
        return F.mse_loss(step.sr, step.gt)


class KLTerm(LossTerm):
    """Token KL(p_T || p_S) between the teacher's and the student's next-scale distributions (paper §3.3)."""

    name = "kl"
    reads_output = False
    needs_teacher = True

    def __init__(self, weight: float, *, temperature: float = 1.0, **common: Any) -> None:
        super().__init__(weight, **common)
        self.temperature = temperature

    def forward(self, step: StepTensors) -> Tensor:
        rows = step.predicted_rows
        return token_kl(step.teacher_logits, step.logits[:, :rows], temperature=self.temperature)


class LPIPSTerm(LossTerm):
    """LPIPS-VGG(sr, gt) on one random ``crop`` window (the whole image if None): VGG16 dominates a CPU step."""

    name = "lpips"

    def __init__(self, weight: float, *, crop: int | None = None, pretrained: bool = True, **common: Any) -> None:
        super().__init__(weight, **common)
        from varestorer.metrics.lpips import LPIPS  # needs the cached VGG/LPIPS assets when pretrained

        self.crop = crop
        self.net = LPIPS(net="vgg", pretrained=pretrained).requires_grad_(False).eval()

    def forward(self, step: StepTensors) -> Tensor:
        sr, gt = step.crop(self.crop)
        return self.net(sr * 2 - 1, gt * 2 - 1).mean()


class DISTSTerm(LossTerm):
    """DISTS(sr, gt) (Ding et al. 2020, proposed as an optimisation objective) on the crop LPIPS uses. Not in
    the paper: it rewards texture statistics that LPIPS and MSE alone flatten."""

    name = "dists"

    def __init__(self, weight: float, *, crop: int | None = None, pretrained: bool = True, **common: Any) -> None:
        super().__init__(weight, **common)
        from varestorer.metrics.dists import DISTS  # needs the cached VGG/DISTS assets when pretrained

        self.crop = crop
        self.net = DISTS(pretrained=pretrained).requires_grad_(False).eval()

    def forward(self, step: StepTensors) -> Tensor:
        sr, gt = step.crop(self.crop)
        return self.net(sr.clamp(0, 1), gt).mean()


class LatentTerm(LossTerm):
    """MSE between the student's LQ latent and the one of the student folder ``teacher`` (per element): e.g.
    default model v2, whose x4v3 + TAEF2 encoder path is carried over to a cheaper encoder. (From Python,
    ``teacher`` may also be a Student.)"""

    name = "latent"

    def __init__(
        self,
        weight: float,
        *,
        teacher: str | Student | None = None,
        student: Student | None = None,
        pretrained: bool = True,
        **common: Any,
    ) -> None:
        super().__init__(weight, **common)
        self.net: Student
        if isinstance(teacher, Student):
            self.net = teacher
        elif pretrained and not teacher:
            raise ValueError("[loss.latent] needs teacher = a student folder whose LQ latent is the target")
        elif pretrained:
            self.net = Student.from_pretrained(str(teacher))
        elif student is not None:  # random weights of the student's own shape (benchmarks)
            self.net = Student(student.config)
        else:
            raise ValueError("[loss.latent] without pretrained weights needs the student")
        self.net.requires_grad_(False).eval()

    def forward(self, step: StepTensors) -> Tensor:
        f_lq = step.out.f_lq
        assert f_lq is not None
        with torch.no_grad():
            target = self.net.encode(self.net.preclean(step.lq)).f_lq
        return F.mse_loss(f_lq.float(), target.float())


class CrossEntropyTerm(LossTerm):
    """The teacher's next-scale CE on the GT bits, conditioned on the whole LQ pyramid: the objective of
    models that declare ``objective = "cross_entropy"`` (the no_distill ablation, models/lq_conditioned.py)."""

    name = "cross_entropy"
    reads_output = False

    def forward(self, step: StepTensors) -> Tensor:
        student = step.module.student
        tokens = step.gt_tokens
        logits = student.teacher_forced_logits(tokens.inputs, step.lq, step.text)  # type: ignore[operator]
        uniform_L = torch.full((logits.shape[1],), 1.0 / logits.shape[1])
        loss, accuracy = bitwise_cross_entropy(logits, torch.cat(tokens.labels, dim=1), uniform_L)
        step.logs["bit_accuracy"] = accuracy.detach()
        return loss


class GTBitsTerm(LossTerm):
    """Per-bit CE of the student's one-step logits against the GT's own bits. Beyond the paper, whose student
    learns its bits only through the teacher's KL and the image losses: a supervised target that makes the
    transformer predict the GT's tokens from the LQ's. Logs ``bit_gain_HxW`` per scale: how much more often the
    student's bits equal the GT's than the LQ's own bits do (docs/default_model.md, the prior checks).

    ``tokens``: whose encoder gives the GT's bits. ``"student"`` (default): the student's own, the space of its
    LQ bits and of its decoder's input (a student whose encoder was trained apart from the teacher's tokenizer,
    as v2Q's was, agrees with the teacher's GT bits on only 72-81 % per scale). ``"teacher"``: the teacher's
    tokenizer, the KL's space (and the only choice for an LQ encoder, which cannot read the GT)."""

    name = "gt_bits"
    reads_output = False

    def __init__(
        self, weight: float, *, reweight_by_scale: bool = True, tokens: str = "student", **common: Any
    ) -> None:
        super().__init__(weight, **common)
        if tokens not in ("student", "teacher"):
            raise ValueError(f"[loss.gt_bits] tokens must be 'student' or 'teacher', got {tokens!r}")
        self.reweight_by_scale = reweight_by_scale
        self.tokens = tokens
        self.needs_teacher = tokens == "teacher"

    def forward(self, step: StepTensors) -> Tensor:
        schedule, rows = step.predicted_schedule, step.predicted_rows
        gt_tokens = step.own_gt_tokens if self.tokens == "student" else step.gt_tokens
        labels = torch.cat(gt_tokens.labels, dim=1)[:, :rows]
        logits = step.logits[:, :rows]
        loss, accuracy = bitwise_cross_entropy(logits, labels, scale_weights(schedule, self.reweight_by_scale))
        step.logs["bit_accuracy"] = accuracy.detach()
        gains = accuracy_per_scale(logits.detach(), labels, schedule) - accuracy_per_scale(
            torch.cat(step.encoding.tokens.labels, dim=1)[:, :rows], labels, schedule
        )
        for (h, w), gain in zip(schedule, gains, strict=True):
            step.logs[f"bit_gain_{h}x{w}"] = gain
        return loss


class GANTerm(LossTerm):
    """Adversarial term: -mean D(sr) of a PatchGAN discriminator on the image crop ``crop`` (the window LPIPS and
    DISTS share when their crop is the same). Real-ESRGAN's answer to MSE and perceptual losses that flatten
    texture: a discriminator that tells restored patches from the GT's. ``D`` (``channels``, ``layers``:
    training/discriminator.py) is this term's own trainable network: its hinge loss on (GT, detached sr) is
    added to the step's loss unweighted, so it learns in the same backward pass from step 0, while the
    generator term applies from ``start_step`` (the discriminator first learns what to tell apart)."""

    name = "gan"

    def __init__(
        self,
        weight: float,
        *,
        crop: int | None = None,
        channels: int = 64,
        layers: int = 3,
        start_step: int = 0,
        **common: Any,
    ) -> None:
        super().__init__(weight, **common)
        if start_step < 0:
            raise ValueError(f"[loss.gan] start_step must be >= 0, got {start_step}")
        self.crop = crop
        self.start_step = start_step
        self.discriminator = PatchDiscriminator(channels, layers)

    def forward(self, step: StepTensors) -> Tensor:
        sr, gt = step.crop(self.crop)
        fake = sr * 2 - 1
        real_logits = self.discriminator(gt * 2 - 1)
        fake_logits = self.discriminator(fake.detach())
        step.own_losses["gan_discriminator"] = hinge_discriminator_loss(real_logits, fake_logits)
        step.logs["gan_real_score"] = real_logits.detach().mean()
        step.logs["gan_fake_score"] = fake_logits.detach().mean()
        if step.index < self.start_step:
            return sr.new_zeros(())
        return hinge_generator_loss(self.discriminator.frozen_call(fake))


LOSS_TERMS: dict[str, type[LossTerm]] = {
    "mse": MSETerm,
    "kl": KLTerm,
    "lpips": LPIPSTerm,
    "dists": DISTSTerm,
    "latent": LatentTerm,
    "cross_entropy": CrossEntropyTerm,
    "gt_bits": GTBitsTerm,
    "gan": GANTerm,
}
"""Every loss term a recipe can name."""

OBJECTIVE_TERMS: dict[str, str | None] = {"distill": None, "cross_entropy": "cross_entropy"}
"""A model's ``objective`` -> the one term it trains with instead of the recipe's (None: the recipe's)."""

_COMMON = ("weight", "student", "pretrained")


@dataclass(frozen=True)
class LossTermConfig:
    """One ``[loss.NAME]`` table: the term ``name`` of :data:`LOSS_TERMS`, its weight and its options."""

    name: str
    weight: float
    options: dict[str, Any] = field(default_factory=dict)


def term_options(cls: type[LossTerm]) -> list[str]:
    """The recipe keys of a term class besides ``weight`` (its keyword-only constructor options)."""
    keys: list[str] = []
    for klass in cls.__mro__:
        if klass is LossTerm or not issubclass(klass, LossTerm):
            break
        params = inspect.signature(klass.__init__).parameters.values()
        keys += [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON and p.name not in keys]
    return keys


def loss_from_table(
    table: dict[str, Any], registry: dict[str, type[LossTerm]] = LOSS_TERMS, *, where: str = "[loss]"
) -> tuple[LossTermConfig, ...]:
    """The terms of a ``[loss]`` table (``{name: {weight, **options}}``), in table order.

    Raises:
        ValueError: an unknown term or option, or a term without a weight.
    """
    terms = []
    for name, entry in table.items():
        if name not in registry:
            raise ValueError(f"{where}: unknown loss term {name!r}; known: {', '.join(registry)}")
        if not isinstance(entry, dict) or "weight" not in entry:
            raise ValueError(f"{where}: [loss.{name}] must be a table with a weight, got {entry!r}")
        options = {k: v for k, v in entry.items() if k != "weight"}
        valid = term_options(registry[name])
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"{where}: [loss.{name}] has unknown option(s) {', '.join(unknown)}; valid: weight, {', '.join(valid)}"
            )
        weight = entry["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"{where}: [loss.{name}] weight must be a number >= 0, got {weight!r}")
        terms.append(LossTermConfig(name, float(weight), options))
    return tuple(terms)


def loss_to_table(terms: tuple[LossTermConfig, ...]) -> dict[str, Any]:
    """The ``[loss]`` table of ``terms`` (the inverse of :func:`loss_from_table`; saved with checkpoints)."""
    return {term.name: {"weight": term.weight, **term.options} for term in terms}


def build_loss_terms(
    terms: tuple[LossTermConfig, ...] | list[LossTermConfig],
    student: Student,
    *,
    pretrained: bool = True,
    registry: dict[str, type[LossTerm]] = LOSS_TERMS,
) -> list[LossTerm]:
    """The term modules of ``terms`` for ``student`` (terms of weight 0 are left out).

    A student whose ``objective`` names its own term (:data:`OBJECTIVE_TERMS`) trains with that term alone.
    """
    objective = OBJECTIVE_TERMS[getattr(student, "objective", "distill")]
    if objective is not None:
        return [registry[objective](1.0, student=student, pretrained=pretrained)]
    return [
        registry[term.name](term.weight, student=student, pretrained=pretrained, **term.options)
        for term in terms
        if term.weight > 0
    ]
