from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varestorer.nn.lora import inject_lora, lora_parameters, lora_state_dict, merge_lora


class Block(nn.Module):
    """Reads its weight through F.linear, as Infinity's attention does."""

    def __init__(self) -> None:
        super().__init__()
        self.mat_qkv = nn.Linear(8, 24, bias=False)
        self.proj = nn.Linear(24, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.linear(x, self.mat_qkv.weight))


def test_injection_is_identity_until_trained_and_reaches_f_linear() -> None:
    model = nn.Sequential(Block(), Block())
    x = torch.randn(3, 8)
    before = model(x)
    names = inject_lora(model, ["*.mat_qkv", "*.proj"], rank=2, alpha=4)
    assert names == ["0.mat_qkv", "0.proj", "1.mat_qkv", "1.proj"]
    assert torch.allclose(model(x), before)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_()
    assert not torch.allclose(model(x), before)  # the F.linear path sees the adapter
    model.requires_grad_(False)
    for p in lora_parameters(model):
        p.requires_grad_(True)
    model(x).sum().backward()
    assert all(p.grad is not None for p in lora_parameters(model))
    assert len(lora_state_dict(model)) == 8


def test_merge_equals_adapter_forward() -> None:
    model = Block()
    inject_lora(model, ["mat_qkv"], rank=3)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_()
    x = torch.randn(5, 8)
    adapted = model(x)
    assert merge_lora(model) == 1
    assert isinstance(model.mat_qkv.weight, nn.Parameter) and not lora_parameters(model)
    assert torch.allclose(model(x), adapted, atol=1e-6)
    assert set(model.state_dict()) == {"mat_qkv.weight", "proj.weight", "proj.bias"}


def test_bad_targets_and_double_injection() -> None:
    model = Block()
    with pytest.raises(ValueError, match="no linear weight"):
        inject_lora(model, ["*.nothing"], rank=2)
    inject_lora(model, ["proj"], rank=2)
    with pytest.raises(ValueError, match="already"):
        inject_lora(model, ["proj"], rank=2)
    with pytest.raises(ValueError, match="rank"):
        inject_lora(Block(), ["proj"], rank=0)
