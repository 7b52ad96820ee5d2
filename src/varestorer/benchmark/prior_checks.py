"""Is the student's transformer doing the work? Bit agreement per scale and the restore pass cut at each stage.

Two checks of issue 32 ("a transformer that does the work"), for a student and paired LQ/GT images:

* **Bits per scale** (:func:`bit_agreement`): the GT is encoded by the student's own encoder and
  quantiser (its bits are the target the transformer should predict). Per scale, the fraction of bits
  where the student's prediction equals the GT's, beside the fraction where the LQ's own bits (the
  transformer's input) already do. A transformer that does the work beats the LQ's bits; one that copies
  them ties.
* **Stages** (:class:`StudentStage`): the same ``Restorer`` tiling as the full model, with the pass cut or
  bypassed at one stage, so per-stage scores tell which stage loses what:

  ==============  ====================================================================================
  ``precleaner``  the pre-cleaner's output alone (bicubic-resized to the working size when it is smaller)
  ``autoencoder`` pre-cleaner -> encoder -> decoder, no quantisation: ``decode(f_LQ)``
  ``quantised``   pre-cleaner -> encoder -> quantise -> decoder: ``decode(f_hat_LQ)``, the LQ's bits only
  ``predicted``   the student's predicted bits alone, no fidelity residual: ``decode(f_hat)``; against
                  ``quantised`` it is the identity ablation of a student without the fidelity path
  ``identity``    the transformer replaced by the identity on tokens: the LQ's bits as the prediction, then
                  the student's own later stages (with ``fidelity_path`` its residual weight too)
  ``full``        the student as it ships
  ==============  ====================================================================================

The student is read through its named stages (``preclean``, ``encode``, ``predict``, ``to_latent``,
``decode``), so nothing here re-tells the pass. Nothing in ``models`` imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varestorer.models.student import Student
from varestorer.restore_spec import Restorable, RestoreSpec

Stage = Literal["precleaner", "autoencoder", "quantised", "predicted", "identity", "full"]
STAGES: tuple[Stage, ...] = ("precleaner", "autoencoder", "quantised", "predicted", "identity", "full")


def bits_as_logits(labels: list[Tensor]) -> Tensor:
    """Per-scale bits [(B, l, d) in {0, 1}] -> (B, L, d, 2) logits that pick exactly those bits."""
    sign_BLd = torch.cat(labels, dim=1).float() * 2 - 1
    return torch.stack([-sign_BLd, sign_BLd], dim=-1)


class StudentStage(Restorable, nn.Module):
    """A student's restore pass stopped or bypassed at ``stage`` (see the module docstring); restorable
    with the student's own ``RestoreSpec``, so a ``Restorer`` tiles it exactly as the full model."""

    def __init__(self, student: Student, stage: Stage) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        self.student = student
        self.stage = stage

    @property
    def restore_spec(self) -> RestoreSpec:
        return replace(self.student.restore_spec, reads_prompts=False)

    def forward(self, lq_B3hw: Tensor) -> Tensor:
        """LQ (B, 3, S/s, S/s) in [0, 1] -> (B, 3, S, S) in [0, 1] through the stages up to ``stage``."""
        student = self.student
        if self.stage == "full":
            return student(lq_B3hw)
        x = student.preclean(lq_B3hw)
        if self.stage == "precleaner":
            size = (student.config.image_size,) * 2
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
            return x.clamp(0, 1)
        encoding = student.encode(x)
        if self.stage == "autoencoder":
            return student.decode(encoding.f_lq)
        if self.stage == "quantised":
            return student.decode(encoding.tokens.f_hat)
        if self.stage == "predicted":  # the student's own bits alone: quantised with the transformer at work
            return student.decode(student.to_latent(student.predict(encoding), encoding).f_hat)
        logits = bits_as_logits(encoding.tokens.labels).to(encoding.f_lq.dtype)
        return student.decode(student.to_latent(logits, encoding).decoder_input)


FLIP_MARGINS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
"""Logit margins at which the bit agreement counts the student's flips of the LQ's bits apart: how often its sure
flips are right, against its unsure ones."""


@dataclass
class BitAgreement:
    """Per-scale agreement with the GT's bits, summed over every tile seen (``add``)."""

    schedule: list[tuple[int, int]]
    student_equal: list[int] = field(default_factory=list)
    """Per scale: bits where the student's prediction equals the GT's."""
    lq_equal: list[int] = field(default_factory=list)
    """Per scale: bits where the LQ's own bits equal the GT's."""
    changed: list[int] = field(default_factory=list)
    """Per scale: bits where the student's prediction differs from the LQ's own bit (what it changed)."""
    total: list[int] = field(default_factory=list)
    """Per scale: bits compared (tiles x h x w x d)."""
    tiles: int = 0
    margins: tuple[float, ...] = FLIP_MARGINS
    """Logit margins at which the student's flips are counted apart (``flipped_over``, ``right_over``)."""
    flipped_over: list[list[int]] = field(default_factory=list)
    """Per scale, per margin: flips of the LQ's bit the student makes by more than that margin."""
    right_over: list[list[int]] = field(default_factory=list)
    """Per scale, per margin: those of the flips that give the GT's bit."""

    def __post_init__(self) -> None:
        zeros = [0] * len(self.schedule)
        self.student_equal = self.student_equal or list(zeros)
        self.lq_equal = self.lq_equal or list(zeros)
        self.changed = self.changed or list(zeros)
        self.total = self.total or list(zeros)
        self.flipped_over = self.flipped_over or [[0] * len(self.margins) for _ in self.schedule]
        self.right_over = self.right_over or [[0] * len(self.margins) for _ in self.schedule]

    def add(self, predicted_BLd: Tensor, lq_BLd: Tensor, gt_BLd: Tensor, flip_margin_BLd: Tensor | None = None) -> None:
        """One batch of bits; ``flip_margin_BLd``: the student's logit margin for the bit that is not the LQ's
        (positive where it flips it), for the counts per margin."""
        offset = 0
        for k, (h, w) in enumerate(self.schedule):
            part = slice(offset, offset + h * w)
            gt = gt_BLd[:, part]
            self.student_equal[k] += int((predicted_BLd[:, part] == gt).sum())
            self.lq_equal[k] += int((lq_BLd[:, part] == gt).sum())
            self.changed[k] += int((predicted_BLd[:, part] != lq_BLd[:, part]).sum())
            self.total[k] += gt.numel()
            if flip_margin_BLd is not None:
                lq_wrong = lq_BLd[:, part] != gt
                for i, margin in enumerate(self.margins):
                    flips = flip_margin_BLd[:, part] > margin
                    self.flipped_over[k][i] += int(flips.sum())
                    self.right_over[k][i] += int((flips & lq_wrong).sum())
            offset += h * w
        self.tiles += gt_BLd.shape[0]

    def gain_over(self, k: int, i: int) -> float:
        """Scale ``k``: the agreement with the GT's bits the flips over ``margins[i]`` alone would add to the
        LQ's (right flips minus wrong ones, per bit)."""
        right, flipped = self.right_over[k][i], self.flipped_over[k][i]
        return (2 * right - flipped) / self.total[k] if self.total[k] else float("nan")

    @property
    def student_rate(self) -> list[float]:
        return [e / t if t else float("nan") for e, t in zip(self.student_equal, self.total)]

    @property
    def lq_rate(self) -> list[float]:
        return [e / t if t else float("nan") for e, t in zip(self.lq_equal, self.total)]

    def to_json_dict(self) -> dict:
        scales = []
        rows = zip(self.schedule, self.total, self.student_rate, self.lq_rate, self.changed)
        for k, ((h, w), t, s, q, c) in enumerate(rows):
            over = [
                {
                    "margin": margin,
                    "flipped": self.flipped_over[k][i] / t if t else float("nan"),
                    "right": self.right_over[k][i] / self.flipped_over[k][i] if self.flipped_over[k][i] else None,
                    "gain": self.gain_over(k, i),
                }
                for i, margin in enumerate(self.margins)
            ]
            changed = c / t if t else float("nan")
            scales.append(
                {"scale": f"{h}x{w}", "bits": t, "student": s, "lq": q, "changed": changed, "flips_over": over}
            )
        return {"tiles": self.tiles, "scales": scales}

    def to_markdown(self) -> str:
        lines = [
            "| scale | bits compared | student = GT | LQ = GT | student - LQ | student != LQ |",
            "|---|---|---|---|---|---|",
        ]
        rows = zip(self.schedule, self.total, self.student_rate, self.lq_rate, self.changed)
        for (h, w), t, s, q, c in rows:
            lines.append(f"| {h}x{w} | {t:,} | {s:.4f} | {q:.4f} | {s - q:+.4f} | {c / t if t else 0:.4%} |")
        if not any(any(row) for row in self.flipped_over):
            return "\n".join(lines)
        header = " | ".join(f"over {m:g}: flipped / right / gain" for m in self.margins)
        lines += ["", "The student's flips of the LQ's bits by logit margin:", "", f"| scale | {header} |"]
        lines.append("|---|" + "---|" * len(self.margins))
        for k, ((h, w), t) in enumerate(zip(self.schedule, self.total)):
            cells = []
            for i in range(len(self.margins)):
                flipped = self.flipped_over[k][i]
                right = self.right_over[k][i] / flipped if flipped else float("nan")
                cells.append(f"{flipped / t if t else 0:.2%} / {right:.3f} / {100 * self.gain_over(k, i):+.2f}")
            lines.append(f"| {h}x{w} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _check_student(student: Student) -> None:
    if student.config.lq_encoder is not None:
        raise ValueError("bit agreement needs the GT at the working size; an lq_encoder student encodes the LQ size")
    if not student.quantizer.bitwise:
        raise ValueError("bit agreement is defined for bitwise quantizers")


@torch.no_grad()
def bit_agreement_batch(student: Student, lq_B3hw: Tensor, gt_B3HW: Tensor, agreement: BitAgreement) -> None:
    """Add one batch of aligned tiles: LQ (B, 3, S/s, S/s) and GT (B, 3, S, S), both in [0, 1]."""
    _check_student(student)
    encoding = student.encode(student.preclean(lq_B3hw))
    logits_BLd2 = student.predict(encoding)
    margin_BLd = logits_BLd2[..., 1] - logits_BLd2[..., 0]  # for bit 1
    predicted_BLd = (margin_BLd > 0).long()
    lq_BLd = torch.cat(encoding.tokens.labels, dim=1)
    gt_BLd = torch.cat(student.encode(gt_B3HW).tokens.labels, dim=1)
    agreement.add(predicted_BLd, lq_BLd, gt_BLd, flip_margin_BLd=margin_BLd * (1 - 2 * lq_BLd))


def aligned_tiles(lq: np.ndarray, gt: np.ndarray, tile: int, scale: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping LQ tiles of ``tile`` px and the GT tiles they cover (``scale * tile`` px), row-major;
    the remainder at the right and bottom is left out."""
    if gt.shape[0] != lq.shape[0] * scale or gt.shape[1] != lq.shape[1] * scale:
        raise ValueError(f"GT {gt.shape[1]}x{gt.shape[0]} is not x{scale} of LQ {lq.shape[1]}x{lq.shape[0]}")
    for y in range(0, lq.shape[0] - tile + 1, tile):
        for x in range(0, lq.shape[1] - tile + 1, tile):
            big = (slice(y * scale, (y + tile) * scale), slice(x * scale, (x + tile) * scale))
            yield lq[y : y + tile, x : x + tile], gt[big]


def bit_agreement(
    student: Student, pairs: Iterable[tuple[np.ndarray, np.ndarray]], *, batch_size: int = 8
) -> BitAgreement:
    """Bits per scale over every aligned tile of ``pairs`` ((h, w, 3) LQ and (s h, s w, 3) GT, uint8 RGB)."""
    _check_student(student)
    tile, scale = student.config.image_size // student.config.scale, student.config.scale
    agreement = BitAgreement([tuple(hw) for hw in student.schedule])  # type: ignore[misc]
    parameter = next(student.parameters())

    def to_tensor(arrays: list[np.ndarray]) -> Tensor:
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255)
        return batch.to(parameter.device, parameter.dtype)

    lq_tiles: list[np.ndarray] = []
    gt_tiles: list[np.ndarray] = []
    for lq, gt in pairs:
        for lq_tile, gt_tile in aligned_tiles(lq, gt, tile, scale):
            lq_tiles.append(lq_tile)
            gt_tiles.append(gt_tile)
            if len(lq_tiles) == batch_size:
                bit_agreement_batch(student, to_tensor(lq_tiles), to_tensor(gt_tiles), agreement)
                lq_tiles, gt_tiles = [], []
    if lq_tiles:
        bit_agreement_batch(student, to_tensor(lq_tiles), to_tensor(gt_tiles), agreement)
    return agreement


ORACLE_ROWS_DOC = """\
Decodes of one tile, each from the student's own LQ encoding unless named:

* ``identity``: the LQ's bits, the student's later stages (fidelity residual included): the identity ablation;
* ``student``: the student's predicted bits (the full pass);
* ``gt_upto_K``: the GT's bits at the first K scales, the student's at the rest (residual included): which
  scales hold the headroom of a better prediction;
* ``gt_bits``: the GT's bits at every scale, residual included (what a perfect transformer would hand on);
* ``gt_bits_alone``: the GT's bits without the LQ's residual;
* ``gt_latent``: the GT's unquantised latent (the decoder's ceiling)."""


@torch.no_grad()
def oracle_decodes(student: Student, lq_B3hw: Tensor, gt_B3HW: Tensor) -> dict[str, Tensor]:
    """The decodes of :data:`ORACLE_ROWS_DOC` for aligned tiles LQ (B, 3, S/s, S/s), GT (B, 3, S, S) in [0, 1]:
    how far the restored picture would move if the transformer predicted the GT's bits (the prior's headroom)."""
    _check_student(student)
    encoding = student.encode(student.preclean(lq_B3hw))
    gt_encoding = student.encode(gt_B3HW)
    predicted = student.predict(encoding)
    decoded = {
        "identity": student.decode(student.to_latent(bits_as_logits(encoding.tokens.labels), encoding).decoder_input),
        "student": student.decode(student.to_latent(predicted, encoding).decoder_input),
    }
    gt_logits = bits_as_logits(gt_encoding.tokens.labels).to(predicted.dtype)
    offset = 0
    for k, (h, w) in enumerate(student.schedule[:-1], start=1):
        offset += h * w
        mixed = torch.cat([gt_logits[:, :offset], predicted[:, offset:]], dim=1)
        decoded[f"gt_upto_{k}"] = student.decode(student.to_latent(mixed, encoding).decoder_input)
    decoded["gt_bits"] = student.decode(student.to_latent(gt_logits, encoding).decoder_input)
    decoded["gt_bits_alone"] = student.decode(gt_encoding.tokens.f_hat)
    decoded["gt_latent"] = student.decode(gt_encoding.f_lq)
    return {name: image.clamp(0, 1) for name, image in decoded.items()}
