"""The training module of ``varestorer train student``: student + frozen teacher pass + the loss terms.

Per step, on a batch of HQ crops ``gt`` (B, 3, S, S) degraded on the fly into ``lq`` (B, 3, S/s, S/s)::

    teacher (frozen, no grad):  GT -> tokenizer -> GT pyramid -> one block-causal pass -> p_T(r_k | r_<k)
    student:                    LQ -> one full-attention pass -> p_S(r_k | LQ), bits -> f_hat -> sr
    loss = sum of weight * term over the recipe's [loss] terms (training/loss_terms.py), e.g. the paper's
           0.1 * KL(p_T || p_S) + 0.25 * LPIPS-VGG(sr, gt) + 0.5 * ||sr - gt||^2

The image terms reach the logits through the straight-through bits of ``Student.logits_to_f_hat``. The
teacher pass runs only when a term asks for the teacher's logits (``kl``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.inference.color import ColorFix, apply_color_fix
from varestorer.models.student import Student
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.quantizer import MultiScaleTokens
from varestorer.training.caption_cache import CaptionCache
from varestorer.training.loss_terms import CropOffsets, LossTerm, StepTensors, random_offsets
from varestorer.training.teacher_pass import TeacherPass
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition

CHECKPOINT_NAMES: dict[str, str] = {"lpips": "perceptual", "dists": "dists", "latent": "latent_teacher"}
"""Term name -> the attribute its frozen network had in StudentDistillation before the term registry."""


class StudentDistillation(nn.Module):
    """Student + frozen teacher + loss terms; ``forward(batch, step) -> (loss, logs)``.

    Args:
        student: the model being trained (a ``Student``, or a model wrapping one as ``base``).
        tokenizer, transformer: the teacher's parts (shared with the student where they are equal); None for a
            student fine-tuned without its teacher (``Student.from_merged``): then no term may need the teacher.
        terms: the loss terms (training/loss_terms.py :func:`build_loss_terms`); the loss is their weighted sum.
        use_prompt: condition on the batch's captions (when the teacher has a text encoder).
        shared_teacher: run the teacher as the student's base with the adapters off (training/teacher_pass.py).
        teacher_dtype: weight dtype of a separate teacher transformer (None: as loaded).
        captions: a cache over the text encoder (None: the student's own encoder, uncached).
        crop_offsets: where the crops of the image terms sit (random; the memory model, which runs on
            tensors without values, fixes them).
        color_fix: the colour fix ("none", "adain", "wavelet") applied to the output against the LQ before
            the image terms read it (``[job] loss_color_fix``), the wavelet fix with the student's
            ``color_fix_levels`` (the levels it ships with).
    """

    def __init__(
        self,
        student: Student,
        tokenizer: MultiScaleTokenizer | None,
        transformer: NextScaleTransformer | None,
        terms: list[LossTerm],
        *,
        use_prompt: bool = True,
        shared_teacher: bool = True,
        teacher_dtype: torch.dtype | None = None,
        captions: CaptionCache | None = None,
        crop_offsets: CropOffsets = random_offsets,
        color_fix: ColorFix = "none",
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("the loss has no term of weight > 0")
        self.use_prompt = use_prompt and student.config.text_encoder.kind != "none"
        self.student = student
        # The no_distill ablation (LQConditionedVAR) wraps a student-shaped ``base``: the teacher pass shares it.
        backbone: Student = getattr(student, "base", student)
        if (tokenizer is None) != (transformer is None):
            raise ValueError("give both of the teacher's parts (tokenizer and transformer) or neither")
        self.teacher: TeacherPass | None = None
        if tokenizer is not None and transformer is not None:
            self.teacher = TeacherPass(backbone, tokenizer, transformer, shared=shared_teacher, dtype=teacher_dtype)
        else:
            need = [term.name for term in terms if term.needs_teacher]
            if need:
                raise ValueError(
                    f"[loss] {', '.join(need)} needs the teacher, and this run has none ([job] teacher is empty): "
                    "set its weight to 0, or name the teacher"
                )
        self.caption_cache = captions
        names = [term.name for term in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"each loss term may appear once, got {names}")
        # A term's frozen network (LPIPS's VGG...) is registered here, once, under the name the chain before
        # the term registry gave it: the Trainer checkpoints every buffer by name, and runs checkpointed before
        # resume. The term keeps reading it as ``term.net``.
        self.network_names: list[str] = []
        for term in terms:
            net = term._modules.pop("net", None)
            if net is not None:
                name = CHECKPOINT_NAMES.get(term.name, f"{term.name}_net")
                self.add_module(name, net)
                object.__setattr__(term, "net", net)  # a plain attribute: one owner, one name
                self.network_names.append(name)
        self.terms = nn.ModuleDict({term.name: term for term in terms})
        self.full_pass = any(term.reads_output for term in terms)
        """Whether a term reads the student's image (or latent): else a step stops after the predict stage."""
        self.crop_offsets = crop_offsets
        self.color_fix_levels: int = backbone.config.color_fix_levels
        zero = torch.zeros(1, 3, 2, 2)
        apply_color_fix(zero, zero, color_fix, levels=self.color_fix_levels)  # validates the name and levels
        self.color_fix: ColorFix = color_fix

    def train(self, mode: bool = True) -> StudentDistillation:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen, as the terms' networks are
        for network in self.loss_networks():
            network.eval()
        return self

    def loss_networks(self) -> list[nn.Module]:
        """The frozen networks of the loss terms."""
        return [self.get_submodule(name) for name in self.network_names]

    @torch.no_grad()
    def teacher_logits(
        self, gt_B3HW: torch.Tensor, text: TextCondition | None, tokens: MultiScaleTokens | None = None
    ) -> torch.Tensor:
        """p_T(r_k | GT tokens <k): one teacher-forced block-causal pass over the GT pyramid (``tokens``, if given)."""
        if self.teacher is None:
            raise ValueError("this run has no teacher")
        return self.teacher(gt_B3HW, text, self.student, tokens)

    @torch.no_grad()
    def captions(self, batch: dict[str, Any]) -> TextCondition | None:
        """The batch's captions through the (frozen) text encoder, or None when prompts are off."""
        if not self.use_prompt:
            return None
        if self.caption_cache is not None:
            return self.caption_cache(list(batch["caption"]), batch["gt"].device)
        return self.student.encode_prompts(list(batch["caption"])).to(batch["gt"].device)

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tensors = StepTensors(self, batch, self.captions(batch), full_pass=self.full_pass, index=step)
        loss: torch.Tensor | None = None
        logs: dict[str, torch.Tensor] = {}
        for term in self.terms.values():
            assert isinstance(term, LossTerm)
            value = term(tensors)
            loss = term.weight * value if loss is None else loss + term.weight * value
            logs[term.name] = value.detach()
        if tensors.student_ran and "mse" not in logs:  # logged only: no gradient through it
            logs["mse"] = F.mse_loss(tensors.sr.detach(), tensors.gt)
        assert loss is not None
        for name, own in tensors.own_losses.items():  # a term's own network (the discriminator) learns here
            loss = loss + own
            logs[name] = own.detach()
        return loss, {**logs, **tensors.logs}
