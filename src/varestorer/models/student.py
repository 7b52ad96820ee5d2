"""The VARestorer student: LQ image -> LQ token pyramid -> one transformer pass -> HQ image.

One step (paper §3.2, DESIGN.md §2 "Student"):

    lq (B, 3, S/s, S/s) in [0, 1]
      -> optional pre-cleaner (same size)
      -> bicubic resize to the working size S
      -> student encoder (a trainable copy of the tokenizer encoder) -> f_LQ (B, d, S/16, S/16)
      -> multi-scale bitwise quantisation -> teacher-forcing inputs of the LQ pyramid (B, L-1, d)
      -> ONE transformer pass, full attention across all scales -> logits of every HQ token (B, L, d, 2)
      -> bits -> codes -> f_hat = sum_k up(codes_k) -> frozen decoder -> sr (B, 3, S, S) in [0, 1]

The transformer is the teacher's, frozen, with LoRA adapters on its attention projections. The
decoder and quantizer are the teacher tokenizer's, frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varestorer.archs.precleaner import PreCleaner
from varestorer.archs.srvgg import SRVGGNetCompact
from varestorer.checkpoint import load_weights, read_config, save_pretrained
from varestorer.config import config_from_dict
from varestorer.models.student_config import STUDENT_PRESETS, StudentConfig
from varestorer.nn.lora import LORA_MARKER, inject_lora, merge_lora, to_parametrized_keys
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.tokenizer.scales import Schedule
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition, TextEncoder, load_text_encoder


@dataclass
class StudentOutput:
    sr: Tensor
    """(B, 3, S, S) restored images in [0, 1] (unclamped in training mode, for the losses)."""
    logits: Tensor
    """(B, L, d, 2) float32 logits of every HQ bit, coarse scale first."""
    f_hat: Tensor
    """(B, d, S/16, S/16) the latent that was decoded."""


def bits_to_codes_straight_through(logits_Bld2: Tensor, bit_values: tuple[float, float]) -> Tensor:
    """Hard codes forward, sigmoid-weighted (expected) codes backward.

    The relaxation (say it plainly, DESIGN.md §2 "Losses"): the forward value is the code of the
    argmax bit, ``v1`` if P(bit=1) > 0.5 else ``v0``; the backward pass differentiates the expected
    code ``P(1) * v1 + (1 - P(1)) * v0``. Without gradient it is exactly the hard decision.

    Returns:
        (B, l, d) codes.
    """
    v0, v1 = bit_values
    p1 = torch.softmax(logits_Bld2.float(), dim=-1)[..., 1]
    hard = torch.where(p1 > 0.5, v1, v0)
    if not torch.is_grad_enabled() or not logits_Bld2.requires_grad:
        return hard
    soft = v0 + (v1 - v0) * p1
    return hard + soft - soft.detach()


class Student(nn.Module):
    """One-step restorer; implements the ``OneStepSR`` protocol the Restorer wraps.

    Attributes:
        scale: native factor s; ``input_size``: LQ side S/s the model is built for; ``size_multiple``: 1
        (any LQ is resized to the working size).
    """

    config_class = StudentConfig

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        tokenizer = MultiScaleTokenizer(config.tokenizer)
        self.encoder = tokenizer.encoder
        self.decoder = tokenizer.decoder
        self.quantizer = tokenizer.quantizer
        self.transformer = NextScaleTransformer(config.transformer)
        self.precleaner = PreCleaner(SRVGGNetCompact(config.precleaner)) if config.precleaner else None
        self.stride = config.tokenizer.stride
        self.schedule: Schedule = (
            tuple(config.schedule)
            if config.schedule
            else tokenizer.default_schedule(config.image_size, config.image_size)
        )
        if tuple(self.schedule[-1]) != (config.image_size // self.stride,) * 2:
            raise ValueError(f"schedule must end at the latent grid of {config.image_size}px, got {self.schedule[-1]}")
        if not config.merged and config.lora_rank > 0:
            inject_lora(self.transformer, config.lora_targets, rank=config.lora_rank, alpha=config.lora_alpha)
        self._text_encoder: TextEncoder | None = None  # loaded on first prompt, never part of the weights
        self.freeze_teacher_parts()

    # ------------------------------------------------------------------------------------ building
    @classmethod
    def from_teacher(
        cls, tokenizer: MultiScaleTokenizer, transformer: NextScaleTransformer, config: StudentConfig
    ) -> Student:
        """A fresh student whose weights are the teacher's (adapters at zero, so it starts as the teacher)."""
        config = replace(config, tokenizer=tokenizer.config, transformer=transformer.config, merged=False)
        student = cls(config)
        student.encoder.load_state_dict(tokenizer.encoder.state_dict())
        student.decoder.load_state_dict(tokenizer.decoder.state_dict())
        student.quantizer.load_state_dict(tokenizer.quantizer.state_dict())
        state = to_parametrized_keys(student.transformer, transformer.state_dict())
        missing, unexpected = student.transformer.load_state_dict(state, strict=False)
        bad = [k for k in missing if LORA_MARKER not in k.rsplit(".", 1)[-1]] + list(unexpected)
        if bad:
            raise ValueError(f"teacher transformer does not match the student's: {bad[:8]}")
        return student

    def freeze_teacher_parts(self) -> None:
        """Trainable: LoRA adapters, the encoder (``train_encoder``), the pre-cleaner. Frozen: the rest."""
        self.requires_grad_(False)
        for name, param in self.transformer.named_parameters():
            if LORA_MARKER in name.rsplit(".", 1)[-1]:
                param.requires_grad_(True)
        if self.config.train_encoder:
            self.encoder.requires_grad_(True)
        if self.config.train_decoder:
            self.decoder.requires_grad_(True)
        if self.precleaner is not None:
            self.precleaner.requires_grad_(True)

    def encode_prompts(self, prompts: list[str]) -> TextCondition:
        """Prompts -> text tokens with the teacher's encoder (``config.text_encoder``)."""
        if self.config.text_encoder.kind == "none":
            raise ValueError("this model has no text encoder (it was distilled without prompts); omit the prompt")
        if self._text_encoder is None:
            self._text_encoder = load_text_encoder(self.config.text_encoder, device=self.transformer.pos_start.device)
        assert self._text_encoder is not None
        return self._text_encoder(prompts)

    # ------------------------------------------------------------------------------------ protocol
    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def input_size(self) -> int:
        return self.config.image_size // self.config.scale

    size_multiple = 1

    @property
    def default_color_fix(self) -> str:
        return self.config.color_fix

    # ------------------------------------------------------------------------------------- forward
    def lq_to_inputs(self, lq_B3hw: Tensor) -> Tensor:
        """LQ (B, 3, h, w) in [0, 1] -> teacher-forcing inputs of its token pyramid (B, L - 1, d)."""
        if lq_B3hw.ndim != 4 or lq_B3hw.shape[1] != 3:
            raise ValueError(f"expected LQ images (B, 3, h, w) in [0, 1], got shape {tuple(lq_B3hw.shape)}")
        x = lq_B3hw
        if self.precleaner is not None:
            x = self.precleaner(x)
        size = (self.config.image_size, self.config.image_size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        f_BdHW = self.encoder(x.clamp(0, 1) * 2 - 1)
        return self.quantizer.quantize(f_BdHW, self.schedule, with_norms=False).inputs

    def logits_to_f_hat(self, logits_BLd2: Tensor) -> Tensor:
        """Per-scale bit logits -> f_hat (B, d, H, W), straight-through when gradients are on."""
        if not self.quantizer.bitwise:
            raise ValueError("the student's relaxation is defined for bitwise quantizers")
        B = logits_BLd2.shape[0]
        d = self.config.tokenizer.token_dim
        grid = self.schedule[-1]
        f_hat = logits_BLd2.new_zeros(B, d, *grid)
        offset = 0
        for index, (h, w) in enumerate(self.schedule):
            codes_Bld = bits_to_codes_straight_through(
                logits_BLd2[:, offset : offset + h * w], self.quantizer.bit_values()
            )
            codes_Bdhw = codes_Bld.transpose(1, 2).reshape(B, d, h, w)
            f_hat = self.quantizer.add_scale(f_hat, codes_Bdhw, scale_index=index, num_scales=len(self.schedule))
            offset += h * w
        return f_hat

    def forward(self, lq_B3hw: Tensor, text: TextCondition | None = None) -> Tensor:
        """LQ (B, 3, S/s, S/s) in [0, 1] -> SR (B, 3, S, S) in [0, 1] (the ``OneStepSR`` contract)."""
        return self.restore(lq_B3hw, text).sr

    def restore(self, lq_B3hw: Tensor, text: TextCondition | None = None) -> StudentOutput:
        """The one-step pass with everything the losses need."""
        inputs = self.lq_to_inputs(lq_B3hw)
        logits = self.transformer(inputs, self.schedule, text, mask=self.config.attention)
        f_hat = self.logits_to_f_hat(logits)
        x = self.decoder(f_hat.to(next(self.decoder.parameters()).dtype))
        sr = (x + 1) / 2
        return StudentOutput(sr=sr if self.training else sr.clamp(0, 1), logits=logits, f_hat=f_hat)

    # --------------------------------------------------------------------------------- checkpoints
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What an adapter checkpoint stores: LoRA tensors, the encoder (and decoder if trained), the pre-cleaner."""
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        keep |= {f"encoder.{k}" for k in self.encoder.state_dict()} if self.config.train_encoder else set()
        keep |= {f"decoder.{k}" for k in self.decoder.state_dict()} if self.config.train_decoder else set()
        keep |= {f"precleaner.{k}" for k in self.precleaner.state_dict()} if self.precleaner is not None else set()
        return {k: v for k, v in self.state_dict().items() if k in keep}

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        overwrite: bool = False,
        dtype: torch.dtype | None = None,
        max_shard_bytes: int | None = None,
    ) -> Path:
        """Adapters + encoder (+ pre-cleaner) and the teacher reference; merged exports store everything.

        ``dtype`` stores floating-point tensors in another precision (e.g. float16 to halve the size);
        loading copies them back into the float32 model. ``max_shard_bytes`` splits the weights into
        Hugging Face shards no bigger than that (see :func:`varestorer.checkpoint.save_pretrained`).
        """
        state = self.state_dict() if self.config.merged else self.trainable_state_dict()
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        return save_pretrained(
            directory, type(self).__name__, self.config, state, overwrite=overwrite, max_shard_bytes=max_shard_bytes
        )

    def merged(self) -> Student:
        """A self-contained copy with every LoRA adapter folded into its weight (``export --merge``)."""
        # deepcopy cannot copy parametrized modules; rebuild and load instead.
        student = type(self)(self.config)
        student.load_state_dict(self.state_dict())
        merge_lora(student.transformer)
        student.config = replace(student.config, merged=True, teacher=None)
        return student.train(self.training)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> Student:
        directory = Path(directory)
        meta = read_config(directory)
        if meta["model_type"] != cls.__name__:
            raise ValueError(f"{directory} holds a {meta['model_type']}, not a {cls.__name__}")
        config = config_from_dict(StudentConfig, meta["config"])
        state = load_weights(directory)
        if config.merged:
            student = cls(config)
            student.load_state_dict(state, strict=True)
            return student.to(device).eval()
        if config.teacher is None:
            raise ValueError(f"{directory}: an adapter checkpoint needs its teacher path in config.json")
        teacher = Path(config.teacher)
        teacher = teacher if teacher.is_absolute() else (directory / teacher)
        tokenizer = load_tokenizer(teacher / "tokenizer")
        transformer = NextScaleTransformer.from_pretrained(teacher / "transformer")
        student = cls.from_teacher(tokenizer, transformer, config)
        expected = student.trainable_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{directory}: adapter checkpoint mismatch; missing {missing[:8]}, unexpected {unexpected[:8]}"
            )
        student.load_state_dict(state, strict=False)
        return student.to(device).eval()


__all__ = ["STUDENT_PRESETS", "Student", "StudentConfig", "StudentOutput", "bits_to_codes_straight_through"]
