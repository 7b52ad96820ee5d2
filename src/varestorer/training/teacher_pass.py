"""The distillation's teacher pass, without a second copy of what the student already holds.

The student is built from its teacher (``Student.from_teacher``): its transformer *is* the teacher's
transformer plus LoRA adapters, every base tensor frozen and equal, and its quantizer is the
teacher's. So the teacher's logits are the student's own transformer run with the adapters switched
off (:func:`varestorer.nn.lora.lora_disabled`) in eval mode, block-causal, under ``no_grad``::

    GT -> teacher encoder -> student.quantizer -> GT pyramid -> student.transformer, LoRA off -> p_T

At Infinity-2B this saves the 2B-parameter copy (4.2 GB in bf16, 8.4 GB in float32). The encoder is
shared too when the student does not train it (``train_encoder = false``); a trained encoder drifts,
so the teacher keeps its own frozen one (small beside the transformer). The teacher's decoder is
never needed and never kept.

When the bases are not the same tensors (``shared = False``, or a transformer that does not match),
the teacher keeps its own frozen transformer, optionally cast to bfloat16 (``dtype``), and runs it
without gradients.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from varestorer.models.student import Student
from varestorer.nn.lora import LORA_MARKER, base_weight_key, lora_disabled
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.quantizer import MultiScaleTokens
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition

logger = logging.getLogger(__name__)


def same_tensors(ours: nn.Module, theirs: nn.Module) -> bool:
    """True when every non-adapter tensor of ``ours`` equals ``theirs``' tensor of the same (plain) name.

    Tensors on the meta device (shapes only, as the memory model builds them) are equal when their shapes are.
    """
    state = {k: v for k, v in theirs.state_dict().items()}
    for key, value in ours.state_dict().items():
        if LORA_MARKER in key.rsplit(".", 1)[-1]:
            continue
        other = state.pop(base_weight_key(key), None)
        if other is None or other.shape != value.shape:
            return False
        if not (value.is_meta or other.is_meta or torch.equal(other.to(value.dtype), value)):
            return False
    return not state


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` (and every submodule) in eval mode inside the block, each restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for submodule, mode in modes:
            submodule.training = mode


class TeacherPass(nn.Module):
    """p_T(r_k | GT tokens < k): one teacher-forced, block-causal pass over the GT pyramid.

    Args:
        student: the student being distilled (not registered here: it belongs to the training module).
        tokenizer: the teacher's tokenizer (only its encoder may be kept).
        transformer: the teacher's transformer (dropped when shared).
        shared: share the student's base where the tensors are the same.
        dtype: the separate teacher transformer's weight dtype (e.g. ``torch.bfloat16``); None keeps it.
    """

    def __init__(
        self,
        student: Student,
        tokenizer: MultiScaleTokenizer,
        transformer: NextScaleTransformer,
        *,
        shared: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.shares_transformer = shared and same_tensors(student.transformer, transformer)
        if shared and not self.shares_transformer:
            logger.warning("the student's transformer does not match its teacher's: keeping a separate teacher")
        self.shares_encoder = (
            shared
            and not any(p.requires_grad for p in student.encoder.parameters())
            and same_tensors(student.encoder, tokenizer.encoder)
        )
        if not same_tensors(student.quantizer, tokenizer.quantizer):
            raise ValueError("the student's quantizer differs from its teacher's; rebuild it with Student.from_teacher")
        self.encoder = None if self.shares_encoder else tokenizer.encoder.requires_grad_(False).eval()
        self.transformer = None
        if not self.shares_transformer:
            self.transformer = transformer.requires_grad_(False).eval()
            if dtype is not None:
                self.transformer.to(dtype)

    def train(self, mode: bool = True) -> TeacherPass:
        return super().train(False)  # frozen: always eval

    @torch.no_grad()
    def tokens(self, gt_B3HW: Tensor, student: Student) -> MultiScaleTokens:
        """GT images (B, 3, S, S) in [0, 1] -> their token pyramid (``inputs`` (B, L - 1, d), ``labels``)."""
        encoder = student.encoder if self.encoder is None else self.encoder
        with eval_mode(encoder):
            f_BdHW = encoder(gt_B3HW * 2 - 1)
        return student.quantizer.quantize(f_BdHW, student.schedule, with_norms=False)  # no host sync

    @torch.no_grad()
    def forward(
        self, gt_B3HW: Tensor, text: TextCondition | None, student: Student, tokens: MultiScaleTokens | None = None
    ) -> Tensor:
        """(B, L', d, 2) float32 teacher logits for the GT images (whose ``tokens`` may be given), over the scales the
        student predicts (L' = L unless ``predicted_scales``: block-causal, so the rows are those of the whole pass)."""
        schedule = getattr(student, "base", student).predicted_schedule
        inputs = (self.tokens(gt_B3HW, student) if tokens is None else tokens).inputs
        inputs = inputs[:, : sum(h * w for h, w in schedule) - 1]
        if self.transformer is not None:
            return self.transformer(inputs, schedule, text, mask="causal")
        with lora_disabled(student.transformer), eval_mode(student.transformer):
            return student.transformer(inputs, schedule, text, mask="causal")
