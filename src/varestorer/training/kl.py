"""Token-level KL between teacher and student next-scale distributions (VARestorer §3.3).

Both bitwise tokens (logits ``(B, L, d, 2)``: one Bernoulli per bit) and codebook tokens
(logits ``(B, L, V)``) are categorical distributions over the last axis; the KL of a bitwise
token is the sum of its per-bit KLs, because the bits are modelled as independent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
