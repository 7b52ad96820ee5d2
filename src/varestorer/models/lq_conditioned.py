"""The ``no_distill`` ablation (paper Table 3): a multi-step VAR conditioned on the LQ image.

Instead of one full-attention pass, this model keeps the teacher's block-causal next-scale
generation and injects the LQ image ControlNet-style (Zhang et al. 2023): the LQ token pyramid
(the same teacher-forcing-format inputs the student reads) is embedded by a trainable copy of the
teacher's ``word_embed`` and added before every block through a zero-initialised linear layer, so
training starts exactly at the teacher. It is trained with the teacher's per-bit cross-entropy on the
GT tokens (no distillation) and restores by sampling the scales autoregressively with a KV cache.

It shares everything else with :class:`~varestorer.models.student.Student` (pre-cleaner, trainable
encoder copy, LoRA on the attention projections, checkpoints); only the transformer pass differs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from varestorer.models.student import Student, StudentOutput
from varestorer.models.student_config import StudentConfig
from varestorer.nn.attention import KVCache
from varestorer.transformer.sampler import sample_top_p
from varestorer.transformer.text import TextCondition


class LQConditionedVAR(Student):
    """Multi-step LQ-conditioned next-scale model; ``forward(lq)`` samples every scale in turn."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__(config)
        width = config.transformer.width
        self.control_embed = nn.Linear(config.tokenizer.token_dim, width)
        self.control_zero = nn.ModuleList(nn.Linear(width, width) for _ in self.transformer.block_list())
        for layer in self.control_zero:
            assert isinstance(layer, nn.Linear)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.control_embed.requires_grad_(True)
        self.control_zero.requires_grad_(True)

    @classmethod
    def from_teacher(cls, teacher, config: StudentConfig) -> LQConditionedVAR:  # type: ignore[override]
        model = super().from_teacher(teacher, config)
        model.control_embed.load_state_dict(teacher.transformer.word_embed.state_dict())  # type: ignore[union-attr]
        return model  # type: ignore[return-value]

    def control(self, lq_inputs_BLd: Tensor) -> list[Tensor]:
        """Per-block additions (B, L, C) from the LQ pyramid; position 0 (start token) gets none."""
        B = lq_inputs_BLd.shape[0]
        embedded = self.control_embed(lq_inputs_BLd)
        c_BLC = torch.cat([embedded.new_zeros(B, 1, embedded.shape[-1]), embedded], dim=1)
        return [zero(c_BLC) for zero in self.control_zero]

    def teacher_forced_logits(self, gt_inputs_BLd: Tensor, lq: Tensor, text: TextCondition | None = None) -> Tensor:
        """(B, L, d, 2) logits of the GT bits given GT tokens < k and the whole LQ (block-causal)."""
        control = self.control(self.lq_to_inputs(lq))
        return self.transformer(gt_inputs_BLd, self.schedule, text, mask="causal", control=control)

    @torch.no_grad()
    def restore(  # type: ignore[override]
        self,
        lq_B3hw: Tensor,
        text: TextCondition | None = None,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = True,
        generator: torch.Generator | None = None,
    ) -> StudentOutput:
        """Sample the HQ scales one by one (K transformer passes with a KV cache), then decode.

        ``greedy`` takes the likelier value of every bit (deterministic); otherwise bits are sampled
        with ``temperature``/``top_p`` from ``generator``.
        """
        B = lq_B3hw.shape[0]
        control = self.control(self.lq_to_inputs(lq_B3hw))
        cond = self.transformer.encode_condition(text, B)
        d = self.config.tokenizer.token_dim
        f_hat = control[0].new_zeros(B, d, *self.schedule[-1])
        cache: KVCache | None = None
        inputs: Tensor | None = None
        all_logits, offset = [], 0
        for k, (h, w) in enumerate(self.schedule):
            step_control = [c[:, offset : offset + h * w] for c in control]
            logits, cache = self.transformer.forward_scale(inputs, self.schedule, k, cond, cache, control=step_control)
            all_logits.append(logits)
            if greedy:
                bits = logits.argmax(-1)
            else:
                bits = sample_top_p(logits / temperature, top_p=top_p, generator=generator)
            codes = self.quantizer.labels_to_codes(bits, (h, w))
            f_hat = self.quantizer.add_scale(f_hat, codes, scale_index=k, num_scales=len(self.schedule))
            if k + 1 < len(self.schedule):
                inputs = self.quantizer.next_input(f_hat, self.schedule[k + 1])
            offset += h * w
        sr = ((self.decoder(f_hat) + 1) / 2).clamp(0, 1)
        return StudentOutput(sr=sr, logits=torch.cat(all_logits, dim=1), f_hat=f_hat)
