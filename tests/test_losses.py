from __future__ import annotations

import math

import pytest
import torch

from varestorer.training.losses import token_kl


def test_zero_for_identical_and_positive_otherwise() -> None:
    logits = torch.randn(2, 7, 5, 2)
    assert token_kl(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert token_kl(logits, torch.randn(2, 7, 5, 2)).item() > 0


def test_bitwise_value_matches_bernoulli_formula() -> None:
    p, q = 0.8, 0.3
    teacher = torch.tensor([math.log(1 - p), math.log(p)]).expand(1, 1, 3, 2)
    student = torch.tensor([math.log(1 - q), math.log(q)]).expand(1, 1, 3, 2)
    bernoulli = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert token_kl(teacher, student).item() == pytest.approx(3 * bernoulli, rel=1e-5)


def test_codebook_gradient_flows_to_student_only() -> None:
    teacher = torch.randn(2, 4, 16)
    student = torch.randn(2, 4, 16, requires_grad=True)
    token_kl(teacher, student, temperature=2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="!="):
        token_kl(teacher, torch.randn(2, 4, 8))
