"""Token-level losses of next-scale models: the teacher's per-bit cross-entropy and the distillation KL.

Token-level KL between teacher and student next-scale distributions (VARestorer §3.3):

Both bitwise tokens (logits ``(B, L, d, 2)``: one Bernoulli per bit) and codebook tokens
(logits ``(B, L, V)``) are categorical distributions over the last axis; the KL of a bitwise
token is the sum of its per-bit KLs, because the bits are modelled as independent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from varestorer.tokenizer.scales import Schedule


def token_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Mean over batch and positions of KL(p_teacher || p_student), summed within a token.

    Args:
        teacher_logits: ``(B, L, d, 2)`` bitwise or ``(B, L, V)`` codebook logits; no gradient is needed.
        student_logits: same shape as ``teacher_logits``.
        temperature: both distributions are softened by it; the result is scaled by ``temperature**2``
            so gradient magnitudes stay comparable (Hinton et al. 2015).

    Returns:
        A scalar. Averaging over the L positions of all scales equals the sum over scales of
        per-scale KLs weighted by each scale's share of tokens.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} != student {tuple(student_logits.shape)}")
    if teacher_logits.ndim not in (3, 4):
        raise ValueError(f"expected (B, L, V) or (B, L, d, 2) logits, got shape {tuple(teacher_logits.shape)}")
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (B, L) or (B, L, d)
    if kl.ndim == 3:
        kl = kl.sum(dim=-1)  # independent bits: the token's KL is the sum over its bits
    return kl.mean() * temperature**2


def bitwise_cross_entropy(logits_BLd2: Tensor, labels_BLd: Tensor, weights_L: Tensor) -> tuple[Tensor, Tensor]:
    """Per-bit CE averaged over bits, weighted over tokens, averaged over the batch; also bit accuracy.

    A codebook model's logits (B, L, V) with labels (B, L) are handled as one "bit" with V classes.
    """
    if logits_BLd2.ndim == 3:  # codebook: (B, L, V)
        logits_BLd2, labels_BLd = logits_BLd2.unsqueeze(2), labels_BLd.unsqueeze(2)
    B, L, d, V = logits_BLd2.shape
    ce_BLd = F.cross_entropy(logits_BLd2.reshape(-1, V).float(), labels_BLd.reshape(-1), reduction="none")
    loss = (ce_BLd.view(B, L, d).mean(-1) * weights_L.to(ce_BLd.device)).sum(1).mean()
    accuracy = (logits_BLd2.argmax(-1) == labels_BLd).float().mean()
    return loss, accuracy


def scale_weights(schedule: Schedule, reweight: bool) -> Tensor:
    """(L,) per-token loss weights summing to 1: uniform, or sqrt(A_K / A_k) for tokens of scale k."""
    areas = [h * w for h, w in schedule]
    if not reweight:
        return torch.full((sum(areas),), 1.0 / sum(areas))
    weights = torch.cat([torch.full((a,), (areas[-1] / a) ** 0.5) for a in areas])
    return weights / weights.sum()


def accuracy_per_scale(logits_BLd2: Tensor, labels_BLd: Tensor, schedule: Schedule) -> Tensor:
    """(K,) fraction of bits whose argmax equals the label, per scale of ``schedule`` (coarse first).

    ``logits_BLd2`` may also be hard bits (B, L, d): then it is compared as it is.
    """
    bits = logits_BLd2.argmax(-1) if logits_BLd2.ndim == labels_BLd.ndim + 1 else logits_BLd2
    if bits.shape != labels_BLd.shape or bits.shape[1] != sum(h * w for h, w in schedule):
        raise ValueError(f"bits {tuple(bits.shape)} and labels {tuple(labels_BLd.shape)} do not cover {schedule}")
    equal = (bits == labels_BLd).float()
    return torch.stack([part.mean() for part in equal.split([h * w for h, w in schedule], dim=1)])


def batch_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (B, C, H, W) images in [0, 1] (RGB, no border crop): the training-time check.

    ``varestorer.metrics.fidelity.psnr`` is the evaluation one (8-bit, Y channel, border crop).
    """
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(dim=1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)
