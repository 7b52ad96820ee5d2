"""The VARestorer student: LQ image -> LQ token pyramid -> one transformer pass -> HQ image.

One step (paper §3.2):

    lq (B, 3, S/s, S/s) in [0, 1]
      -> optional pre-cleaner (same size; or ``precleaner_resolution = "output"``: an x4 pre-cleaner's S x S output)
      -> bicubic resize to the working size S (none when it already is)
      -> student encoder (a trainable copy of the tokenizer encoder) -> f_LQ (B, d, S/p, S/p), p = its stride (8)
      -> multi-scale bitwise quantisation -> teacher-forcing inputs of the LQ pyramid (B, L-1, d)
      -> ONE transformer pass, full attention across all scales -> logits of every HQ token (B, L, d, 2)
      -> bits -> codes -> f_hat = sum_k up(codes_k) -> frozen decoder -> sr (B, 3, S, S) in [0, 1]

The transformer is the teacher's, frozen, with LoRA adapters on its attention projections. The
decoder and quantizer are the teacher tokenizer's, frozen. The tokenizer may be of any family
(``config.tokenizer_type``, built through ``varestorer.families``).

Two opt-in paths beyond the paper (``StudentConfig.lq_bit_skip``, ``fidelity_path``) start the student at
the LQ's own reconstruction:

    logits_k += g_k * (2 b_k - 1) / 2 * (-1, +1)      b_k: the LQ's bits at scale k, g_k learned per scale
    decoder input = f_hat + w * (f_LQ - f_hat_LQ)     w: learned per channel, f_hat_LQ: f_LQ quantised

With both on and untrained (the bits of the LQ win), the output is ``decoder(encoder(precleaner(lq)))``.

A third opt-in change (``StudentConfig.lq_encoder``, ``models/lq_encoder.py``) encodes the LQ at its own
resolution (no pre-cleaner, no resize to the working size), and ``decoder_skip_blocks`` leaves TAEF2
decoder Blocks out: both for CPU speed (docs/default_model.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varestorer.archs.srvgg import SRVGGNetCompact
from varestorer.models.adapter_checkpoint import AdapterCheckpointMixin, load_adapter_checkpoint
from varestorer.models.control_branch import ControlBranch
from varestorer.models.lq_encoder import LQEncoder
from varestorer.models.precleaner import PreCleaner
from varestorer.models.student_config import STUDENT_PRESETS, StudentConfig
from varestorer.models.teacher import PromptEncoding, Teacher
from varestorer.nn.lora import LORA_MARKER, inject_lora, merge_lora, to_parametrized_keys
from varestorer.restore_spec import Restorable, RestoreSpec
from varestorer.tokenizer.loading import build_tokenizer
from varestorer.tokenizer.quantizer import MultiScaleTokens
from varestorer.tokenizer.scales import Schedule
from varestorer.tokenizer.taef2_modules import TAEBlock
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition, TextEncoder


@dataclass
class StudentOutput:
    sr: Tensor
    """(B, 3, S, S) restored images in [0, 1] (unclamped in training mode, for the losses)."""
    logits: Tensor
    """(B, L, d, 2) float32 logits of every HQ bit, coarse scale first."""
    f_hat: Tensor
    """(B, d, S/stride, S/stride) the latent of the predicted bits (the decoder's input without ``fidelity_path``)."""
    f_lq: Tensor | None = None
    """(B, d, S/stride, S/stride) the encoder's unquantised LQ latent (``Student.restore``; None elsewhere)."""
    f_hat_lq: Tensor | None = None
    """(B, d, S/stride, S/stride) ``f_lq`` quantised over the schedule (the LQ's own tokens)."""


class LQEncoding(NamedTuple):
    """What the encode stage hands the later ones (a tuple: ``f_lq, tokens = student.encode(x)``)."""

    f_lq: Tensor
    """(B, d, S/stride, S/stride) the encoder's unquantised latent of the pre-cleaned LQ."""
    tokens: MultiScaleTokens
    """``f_lq`` quantised over the schedule: its teacher-forcing inputs (B, L - 1, d), bits and ``f_hat``."""


def predicted_schedule(schedule: Schedule, count: int | None) -> Schedule:
    """The first ``count`` scales of ``schedule`` (all for None): those a ``predicted_scales`` student predicts."""
    if count is None:
        return schedule
    if not 1 <= count <= len(schedule):
        raise ValueError(f"predicted_scales must be in [1, {len(schedule)}] for this schedule, got {count}")
    return tuple(schedule[:count])


KEPT_BIT_MARGIN = 20.0
"""Logit margin of the LQ's bits at the scales a ``predicted_scales`` student does not predict: P = 1 - 2e-9,
so the straight-through code is the hard code and no gradient flows through those rows."""


class Latent(NamedTuple):
    """What the to-latent stage hands the decoder."""

    f_hat: Tensor
    """(B, d, S/stride, S/stride) the latent of the predicted bits."""
    decoder_input: Tensor
    """(B, d, S/stride, S/stride) ``f_hat``, plus the LQ latent's weighted residual with ``fidelity_path``."""


def bits_to_codes_straight_through(logits_Bld2: Tensor, bit_values: tuple[float, float]) -> Tensor:
    """Hard codes forward, sigmoid-weighted (expected) codes backward.

    The relaxation (our choice; the paper does not specify one): the forward value is the code of the
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


class Student(AdapterCheckpointMixin, PromptEncoding, Restorable, nn.Module):
    """One-step restorer; implements the ``OneStepSR`` protocol the Restorer wraps.

    Attributes:
        scale: native factor s; ``input_size``: LQ side S/s the model is built for; ``size_multiple``: 1
        (any LQ is resized to the working size).
    """

    config_class = StudentConfig
    no_text_encoder = "this model has no text encoder (it was distilled without prompts); omit the prompt"
    objective: ClassVar[str] = "distill"
    """How ``varestorer train student`` trains it: distilled from the teacher (token KL + image losses)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        tokenizer = build_tokenizer(config.tokenizer_type, config.tokenizer)
        self.encoder: nn.Module = (
            LQEncoder(config.lq_encoder, tokenizer.encoder, scale=config.scale)  # type: ignore[arg-type]
            if config.lq_encoder is not None
            else tokenizer.encoder
        )
        skip_blocks(self.encoder, config.encoder_skip_blocks, "encoder")
        self.decoder = tokenizer.decoder
        skip_blocks(self.decoder, config.decoder_skip_blocks, "decoder")
        self.quantizer = tokenizer.quantizer
        self.transformer = NextScaleTransformer(config.transformer)
        self.precleaner = (
            PreCleaner(SRVGGNetCompact(config.precleaner), keep_input_size=config.precleaner_resolution == "lq")
            if config.precleaner
            else None
        )
        self.stride = config.tokenizer.stride
        self.schedule: Schedule = (
            tuple(config.schedule)
            if config.schedule
            else tokenizer.default_schedule(config.image_size, config.image_size)
        )
        if tuple(self.schedule[-1]) != (config.image_size // self.stride,) * 2:
            raise ValueError(f"schedule must end at the latent grid of {config.image_size}px, got {self.schedule[-1]}")
        num_scales, token_dim = len(self.schedule), config.tokenizer.token_dim
        predicted_schedule(self.schedule, config.predicted_scales)  # a clear error for a count beyond the schedule
        self.lq_bit_gain = (
            nn.Parameter(torch.full((num_scales,), float(config.lq_bit_gain_init))) if config.lq_bit_skip else None
        )
        """(K,) g_k of ``lq_bit_skip``: the logit margin given to the LQ's own bit at scale k."""
        self.fidelity_weight = nn.Parameter(torch.ones(token_dim)) if config.fidelity_path else None
        """(d,) w of ``fidelity_path``: how much of the LQ latent's quantisation residual reaches the decoder."""
        transformer_config = config.transformer
        self.lq_control = (
            ControlBranch(token_dim, transformer_config.width, transformer_config.depth)
            if config.lq_residual_control
            else None
        )
        """``lq_residual_control``: the LQ's normalised residuals of scales 2..K -> one addition per block."""
        if not config.merged and config.lora_rank > 0:
            inject_lora(self.transformer, config.lora_targets, rank=config.lora_rank, alpha=config.lora_alpha)
        self._text_encoder: TextEncoder | None = None  # loaded on first prompt, never part of the weights
        self.freeze_teacher_parts()

    # ------------------------------------------------------------------------------------ building
    @classmethod
    def from_teacher(cls, teacher: Teacher, config: StudentConfig) -> Student:
        """A fresh student whose weights are the teacher's (adapters at zero, so it starts as the teacher).

        The shapes (tokenizer and its family, transformer) come from the teacher, and so does the schedule
        when the teacher has fixed ``scales`` and ``config`` sets none; the rest of ``config`` is kept.
        """
        tokenizer, transformer = teacher.tokenizer, teacher.transformer
        schedule = config.schedule
        if schedule is None and getattr(teacher.config, "scales", None) is not None:
            schedule = teacher.schedule(config.image_size, config.image_size)
        config = replace(
            config,
            tokenizer=tokenizer.config,
            tokenizer_type=type(tokenizer).__name__,
            transformer=transformer.config,
            schedule=schedule,
            merged=False,
        )
        student = cls(config)
        if isinstance(student.encoder, LQEncoder):
            student.encoder.init_from(tokenizer.encoder)  # type: ignore[arg-type]
        else:
            own = student.encoder.state_dict()
            student.encoder.load_state_dict({k: v for k, v in tokenizer.encoder.state_dict().items() if k in own})
        decoder_state = tokenizer.decoder.state_dict()
        own = student.decoder.state_dict()
        if not set(own) <= set(decoder_state):
            raise ValueError(f"teacher decoder lacks {sorted(set(own) - set(decoder_state))[:8]}")
        student.decoder.load_state_dict({k: v for k, v in decoder_state.items() if k in own})
        student.quantizer.load_state_dict(tokenizer.quantizer.state_dict())
        state = to_parametrized_keys(student.transformer, transformer.state_dict())
        missing, unexpected = student.transformer.load_state_dict(state, strict=False)
        bad = [k for k in missing if LORA_MARKER not in k.rsplit(".", 1)[-1]] + list(unexpected)
        if bad:
            raise ValueError(f"teacher transformer does not match the student's: {bad[:8]}")
        return student

    @staticmethod
    def fine_tune_config(config: StudentConfig, merged: StudentConfig) -> StudentConfig:
        """``config`` on a merged student's shapes (tokenizer, transformer, text encoder, schedule), as an adapter
        student without a teacher: what :meth:`from_merged` builds, and what a bench of it counts."""
        return replace(
            config,
            tokenizer=merged.tokenizer,
            tokenizer_type=merged.tokenizer_type,
            transformer=merged.transformer,
            text_encoder=merged.text_encoder,
            schedule=tuple((h, w) for h, w in merged.schedule) if merged.schedule else None,
            merged=False,
            teacher=None,
        )

    @classmethod
    def from_merged(cls, merged: Student, config: StudentConfig) -> Student:
        """A fresh student whose every weight is a merged student's (the embedded default, an export), with
        ``config``'s adapters at zero on top: it starts as exactly ``merged``, to be fine-tuned without the
        teacher it was distilled from. The shapes (tokenizer, transformer, schedule) come from ``merged``; parts
        ``config`` adds (an LQ control branch, fidelity weights) start fresh.

        Raises:
            ValueError: ``merged`` is an adapter checkpoint, or ``config`` drops or reshapes one of its parts.
        """
        if not merged.config.merged:
            raise ValueError("from_merged needs a merged student (an export or an embedded model)")
        student = cls(cls.fine_tune_config(config, replace(merged.config, schedule=merged.schedule)))
        state = to_parametrized_keys(student.transformer, merged.transformer.state_dict())
        state = {f"transformer.{k}": v for k, v in state.items()}
        state |= {k: v for k, v in merged.state_dict().items() if not k.startswith("transformer.")}
        own = student.state_dict()
        dropped = sorted(k for k in state if k not in own)
        reshaped = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
        if dropped or reshaped:
            found = [f"no {dropped[:4]}"] if dropped else []
            found += [f"other shapes for {reshaped[:4]}"] if reshaped else []
            raise ValueError(
                f"[model] does not fit the merged student: it has {' and '.join(found)} (keep its "
                "encoder_skip_blocks, decoder_skip_blocks, precleaner, lq_bit_skip and lq_residual_control)"
            )
        student.load_state_dict(state, strict=False)
        return student

    def freeze_teacher_parts(self) -> None:
        """Trainable: LoRA adapters, the encoder (``train_encoder``), the decoder (``train_decoder``), the
        pre-cleaner (``train_precleaner``), the skip gains and fidelity weights. Frozen: the rest."""
        self.requires_grad_(False)
        for name, param in self.transformer.named_parameters():
            if LORA_MARKER in name.rsplit(".", 1)[-1]:
                param.requires_grad_(True)
        if self.config.train_encoder:
            self.encoder.requires_grad_(True)
        if self.config.train_decoder:
            self.decoder.requires_grad_(True)
        if self.precleaner is not None and self.config.train_precleaner:
            self.precleaner.requires_grad_(True)
        for extra in (self.lq_bit_gain, self.fidelity_weight, self.lq_control):
            if extra is not None:
                extra.requires_grad_(True)

    @property
    def predicted_schedule(self) -> Schedule:
        """The scales whose bits the transformer predicts (``predicted_scales``); the finer ones keep the LQ's."""
        return predicted_schedule(self.schedule, self.config.predicted_scales)

    # ------------------------------------------------------------------------------------ protocol
    @property
    def restore_spec(self) -> RestoreSpec:
        """The restore contract, read off the config (``scale``/``input_size`` come from it: ``Restorable``)."""
        config = self.config
        return RestoreSpec(
            scale=config.scale,
            input_size=config.image_size // config.scale,
            default_color_fix=config.color_fix,
            color_fix_levels=config.color_fix_levels,
            default_tile_overlap=config.tile_overlap,
            reads_prompts=config.text_encoder.kind != "none",
        )

    # ------------------------------------------------------------------------- the one-step pass, by stage
    # ``restore`` is these five calls in order and nothing else; ``varestorer bench`` times each of them.
    def preclean(self, lq_B3hw: Tensor) -> Tensor:
        """Stage 1. LQ (B, 3, h, w) in [0, 1] -> the pre-cleaner's output (the LQ itself without one)."""
        if lq_B3hw.ndim != 4 or lq_B3hw.shape[1] != 3:
            raise ValueError(f"expected LQ images (B, 3, h, w) in [0, 1], got shape {tuple(lq_B3hw.shape)}")
        return self.precleaner(lq_B3hw) if self.precleaner is not None else lq_B3hw

    def encode(self, x: Tensor) -> LQEncoding:
        """Stage 2. Pre-cleaned LQ -> its latent f_LQ (B, d, H, W) and f_LQ's tokens over the schedule.

        The encoder reads ``x`` bicubic-resized to the working size, or to the LQ size with ``lq_encoder``."""
        side = self.config.image_size // (self.config.scale if self.config.lq_encoder is not None else 1)
        size = (side, side)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        f_BdHW = self.encoder(x.clamp(0, 1) * 2 - 1)
        residuals = self.lq_control is not None
        tokens = self.quantizer.quantize(f_BdHW, self.schedule, with_norms=False, with_residuals=residuals)
        return LQEncoding(f_BdHW, tokens)

    def predict(self, encoding: LQEncoding, text: TextCondition | None = None) -> Tensor:
        """Stage 3. ONE transformer pass over the LQ pyramid's inputs -> (B, L, d, 2) logits of every HQ bit.

        The attention mask is ``config.attention``; with ``lq_bit_skip`` the LQ's own bits are added, with
        ``lq_residual_control`` its residuals enter every block. With ``predicted_scales`` the pass reads the first
        scales only and the finer scales' rows are the LQ's own bits at a fixed margin (``KEPT_BIT_MARGIN``)."""
        tokens = encoding.tokens
        schedule = self.predicted_schedule
        n_inputs = sum(h * w for h, w in schedule) - 1
        control = None
        if self.lq_control is not None:
            if tokens.residuals is None:
                raise ValueError("lq_residual_control needs the LQ's residuals: encode with this student's encode")
            residuals_BLd = torch.cat(tokens.residuals[1 : len(schedule)], dim=1) * self.config.tokenizer.token_dim**0.5
            control = self.lq_control(residuals_BLd.to(tokens.inputs.dtype))
        inputs = tokens.inputs[:, :n_inputs]
        logits = self.transformer(inputs, schedule, text, mask=self.config.attention, control=control)
        if self.lq_bit_gain is not None:
            logits = self.add_lq_bits(logits, tokens.labels[: len(schedule)])
        if len(schedule) == len(self.schedule):
            return logits
        kept = torch.cat(tokens.labels[len(schedule) :], dim=1).to(logits.dtype) * 2 - 1  # the LQ's bits as +-1
        half = kept * KEPT_BIT_MARGIN / 2
        return torch.cat([logits, torch.stack([-half, half], dim=-1)], dim=1)

    def to_latent(self, logits_BLd2: Tensor, encoding: LQEncoding) -> Latent:
        """Stage 4. Bit logits -> f_hat and the decoder's input (f_hat, plus with ``fidelity_path`` the
        weighted residual of the LQ latent's quantisation, whose gradient reaches the encoder)."""
        f_hat = self.logits_to_f_hat(logits_BLd2)
        if self.fidelity_weight is None:
            return Latent(f_hat, f_hat)
        residual = encoding.f_lq.float() - encoding.tokens.f_hat.detach()
        return Latent(f_hat, f_hat + self.fidelity_weight.view(1, -1, 1, 1) * residual)

    def decode(self, latent_BdHW: Tensor) -> Tensor:
        """Stage 5. Decoder input (B, d, H, W) -> SR (B, 3, S, S) in [0, 1] (unclamped in training mode)."""
        sr = (self.decoder(latent_BdHW.to(next(self.decoder.parameters()).dtype)) + 1) / 2
        return sr if self.training else sr.clamp(0, 1)

    def restore(self, lq_B3hw: Tensor, text: TextCondition | None = None) -> StudentOutput:
        """The one-step pass, stage by stage, with everything the losses need."""
        return self.restore_encoded(self.encode(self.preclean(lq_B3hw)), text)

    def restore_encoded(
        self, encoding: LQEncoding, text: TextCondition | None = None, logits: Tensor | None = None
    ) -> StudentOutput:
        """Stages 3-5 of ``restore`` from the encode stage's output (and the predict stage's, if already run):
        the training loss shares one encoding between the bit terms and the image terms."""
        logits = self.predict(encoding, text) if logits is None else logits
        latent = self.to_latent(logits, encoding)
        sr = self.decode(latent.decoder_input)
        return StudentOutput(
            sr=sr, logits=logits, f_hat=latent.f_hat, f_lq=encoding.f_lq, f_hat_lq=encoding.tokens.f_hat
        )

    def forward(self, lq_B3hw: Tensor, text: TextCondition | None = None) -> Tensor:
        """LQ (B, 3, S/s, S/s) in [0, 1] -> SR (B, 3, S, S) in [0, 1] (the ``OneStepSR`` contract)."""
        return self.restore(lq_B3hw, text).sr

    # ------------------------------------------------------------------------------ parts of the stages
    def lq_to_inputs(self, lq_B3hw: Tensor) -> Tensor:
        """LQ (B, 3, h, w) in [0, 1] -> teacher-forcing inputs of its token pyramid (B, L - 1, d)."""
        return self.encode(self.preclean(lq_B3hw)).tokens.inputs

    def add_lq_bits(self, logits_BLd2: Tensor, lq_labels: list[Tensor]) -> Tensor:
        """``lq_bit_skip``: logits + g_k * (2b - 1) / 2 on bit 1 and minus that on bit 0, b the LQ's bits (of the
        first ``len(lq_labels)`` scales)."""
        assert self.lq_bit_gain is not None
        counts = [h * w for h, w in self.schedule[: len(lq_labels)]]
        gain = self.lq_bit_gain[: len(counts)].to(logits_BLd2.dtype)  # output_size: no host sync (fake tensors too)
        gain_L = torch.repeat_interleave(gain, torch.tensor(counts, device=gain.device), output_size=sum(counts))
        half_BLd = gain_L.view(1, -1, 1) * (torch.cat(lq_labels, dim=1).to(logits_BLd2.dtype) * 2 - 1) / 2
        return logits_BLd2 + torch.stack([-half_BLd, half_BLd], dim=-1)

    def logits_to_f_hat(self, logits_BLd2: Tensor) -> Tensor:
        """Per-scale bit logits -> f_hat (B, d, H, W), straight-through when gradients are on."""
        if not self.quantizer.bitwise:
            raise ValueError("the student's relaxation is defined for bitwise quantizers")
        B = logits_BLd2.shape[0]
        d = self.config.tokenizer.token_dim
        bit_values = self.quantizer.bit_values()  # type: ignore[operator]
        codes, offset = [], 0
        for h, w in self.schedule:
            codes_Bld = bits_to_codes_straight_through(logits_BLd2[:, offset : offset + h * w], bit_values)
            codes.append(codes_Bld.transpose(1, 2).reshape(B, d, h, w))
            offset += h * w
        return self.quantizer.accumulate(codes, self.schedule, self.schedule[-1], with_inputs=False)[0]

    # --------------------------------------------------------------------------------- checkpoints
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What an adapter checkpoint stores: LoRA tensors, the encoder (if trained, an LQ encoder or with Blocks left
        out; and the decoder if trained), the pre-cleaner
        (trained or not), the skip gains, fidelity weights and LQ control branch."""
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        config = self.config  # the teacher has no LQ encoder, nor one with Blocks left out
        own_encoder = config.train_encoder or config.lq_encoder is not None or bool(config.encoder_skip_blocks)
        keep |= {f"encoder.{k}" for k in self.encoder.state_dict()} if own_encoder else set()
        keep |= {f"decoder.{k}" for k in self.decoder.state_dict()} if self.config.train_decoder else set()
        keep |= {f"precleaner.{k}" for k in self.precleaner.state_dict()} if self.precleaner is not None else set()
        return {k: v for k, v in self.state_dict().items() if k in keep}

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
        return load_adapter_checkpoint(cls, directory, device=device)


def skip_blocks(half: nn.Module, indices: tuple[int, ...], which: str) -> None:
    """Replace the TAEF2 Blocks at ``indices`` of ``half.net`` (an encoder or decoder) by identities, in place.

    Raises:
        ValueError: ``half`` has no ``net`` stack, or an index is not one of its Blocks.
    """
    if not indices:
        return
    net = getattr(half, "net", None)
    blocks = [i for i, layer in enumerate(net or ()) if isinstance(layer, TAEBlock)]
    for index in indices:
        if index not in blocks:
            article = "an" if which[0] in "aeiou" else "a"
            raise ValueError(f"{which}_skip_blocks: {index} is not {article} {which} Block; the Blocks are at {blocks}")
        net[index] = nn.Identity()  # type: ignore[index]


__all__ = [
    "KEPT_BIT_MARGIN",
    "STUDENT_PRESETS",
    "Latent",
    "LQEncoding",
    "Student",
    "StudentConfig",
    "StudentOutput",
    "bits_to_codes_straight_through",
    "predicted_schedule",
]
