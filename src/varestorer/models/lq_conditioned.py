"""The ``no_distill`` ablation (paper Table 3): a multi-step VAR conditioned on the LQ image.

Instead of one full-attention pass, this model keeps the teacher's block-causal next-scale
generation and injects the LQ image ControlNet-style (Zhang et al. 2023, arXiv:2302.05543): the LQ
token pyramid (the same teacher-forcing-format inputs the student reads) is embedded by a trainable
copy of the teacher's ``word_embed`` and added before every block through a zero-initialised linear
layer, so training starts exactly at the teacher. It is trained with the teacher's per-bit
cross-entropy on the GT tokens (no distillation) and restores by sampling the scales with the one
sampler (``transformer/sampler.py``: KV cache, optional CFG).

It is a composition, not a subclass: ``self.base`` is a :class:`~varestorer.models.student.Student`
built from the teacher (its pre-cleaner, trainable encoder copy, LoRA'd transformer, decoder and
quantizer), and ``self.control`` is the :class:`ControlBranch`. Only the transformer pass differs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from varestorer.models.adapter_checkpoint import AdapterCheckpointMixin, load_adapter_checkpoint
from varestorer.models.control_branch import ControlBranch
from varestorer.models.student import Student, StudentOutput
from varestorer.models.student_config import StudentConfig
from varestorer.models.teacher import Teacher
from varestorer.restore_spec import Restorable, RestoreSpec
from varestorer.tokenizer.scales import Schedule
from varestorer.transformer.sampler import sample_scales_detailed
from varestorer.transformer.text import TextCondition


def _legacy_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checkpoints of the subclass version (``control_embed.*``, ``encoder.*``...) -> this layout."""
    if not any(k.startswith("control_embed.") for k in state):
        return state
    out = {}
    for key, value in state.items():
        if key.startswith("control_embed."):
            out["control.embed." + key.removeprefix("control_embed.")] = value
        elif key.startswith("control_zero."):
            out["control.zero." + key.removeprefix("control_zero.")] = value
        else:
            out["base." + key] = value
    return out


class LQConditionedVAR(AdapterCheckpointMixin, Restorable, nn.Module):
    """Multi-step LQ-conditioned next-scale model; ``forward(lq)`` samples every scale in turn (greedy)."""

    config_class = StudentConfig
    objective: ClassVar[str] = "cross_entropy"
    """How ``varestorer train student`` trains it: the teacher's per-bit cross-entropy on the GT tokens."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.base = Student(config)
        transformer = self.base.transformer
        self.control = ControlBranch(
            config.tokenizer.token_dim, config.transformer.width, len(transformer.block_list())
        )

    @property
    def config(self) -> StudentConfig:
        return self.base.config

    @property
    def schedule(self) -> Schedule:
        return self.base.schedule

    # ------------------------------------------------------------------------------------ building
    @classmethod
    def from_teacher(cls, teacher: Teacher, config: StudentConfig) -> LQConditionedVAR:
        """The teacher's weights everywhere; the control embedding starts as the teacher's ``word_embed``."""
        base = Student.from_teacher(teacher, config)
        model = cls(base.config)
        model.base = base
        model.control.embed.load_state_dict(teacher.transformer.word_embed.state_dict())  # type: ignore[union-attr]
        return model

    # ------------------------------------------------------------------------------------ protocol
    @property
    def restore_spec(self) -> RestoreSpec:
        """The base student's contract, whole (its tile overlap and colour fix included)."""
        return self.base.restore_spec

    @property
    def precleaner(self) -> nn.Module | None:
        return self.base.precleaner

    def encode_prompts(self, prompts: list[str]) -> TextCondition:
        return self.base.encode_prompts(prompts)

    # ------------------------------------------------------------------------------------- forward
    def teacher_forced_logits(self, gt_inputs_BLd: Tensor, lq: Tensor, text: TextCondition | None = None) -> Tensor:
        """(B, L, d, 2) logits of the GT bits given GT tokens < k and the whole LQ (block-causal)."""
        control = self.control(self.base.lq_to_inputs(lq))
        return self.base.transformer(gt_inputs_BLd, self.schedule, text, mask="causal", control=control)

    def forward(self, lq_B3hw: Tensor, text: TextCondition | None = None) -> Tensor:
        return self.restore(lq_B3hw, text).sr

    @torch.no_grad()
    def restore(
        self,
        lq_B3hw: Tensor,
        text: TextCondition | None = None,
        *,
        cfg_scale: float = 1.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = True,
        generator: torch.Generator | None = None,
    ) -> StudentOutput:
        """Sample the HQ scales one by one (K transformer passes with a KV cache), then decode.

        ``greedy`` takes the likelier value of every bit (deterministic); otherwise bits are sampled
        with ``temperature``/``top_p`` from ``generator``. ``cfg_scale`` guides with ``text``.
        """
        sampled = sample_scales_detailed(
            self.base.transformer,
            self.base.quantizer,
            self.schedule,
            text,
            batch_size=lq_B3hw.shape[0],
            cfg_scale=cfg_scale,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            greedy=greedy,
            control=self.control(self.base.lq_to_inputs(lq_B3hw)),
        )
        sr = self.base.decode(sampled.f_hat).clamp(0, 1)  # clamped in training mode too: a sampled output
        return StudentOutput(sr=sr, logits=torch.cat(sampled.logits, dim=1), f_hat=sampled.f_hat)

    # --------------------------------------------------------------------------------- checkpoints
    def freeze_teacher_parts(self) -> None:
        """The student's trainable parts, and the whole control branch."""
        self.base.freeze_teacher_parts()
        self.control.requires_grad_(True)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        state = {f"base.{k}": v for k, v in self.base.trainable_state_dict().items()}
        return state | {f"control.{k}": v for k, v in self.control.state_dict().items()}

    def merged(self) -> LQConditionedVAR:
        """A self-contained copy with the LoRA adapters folded in (``export --merge``)."""
        model = type(self)(replace(self.config, merged=True, teacher=None))
        model.base = self.base.merged()
        model.control.load_state_dict(self.control.state_dict())
        return model.train(self.training)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> LQConditionedVAR:
        return load_adapter_checkpoint(cls, directory, device=device, remap=_legacy_keys)
