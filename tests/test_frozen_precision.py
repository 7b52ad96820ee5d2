"""``train.frozen_weights_dtype = "bfloat16"`` (training/frozen_precision.py): same step, half the frozen bytes."""

from __future__ import annotations

import pytest
import torch

from varestorer.benchmark.memory_model import predict_memory
from varestorer.benchmark.train_setup import RECIPE_PRECLEANER, DistillSetup, build_distillation, preset_student
from varestorer.training.config import TrainConfig
from varestorer.training.frozen_precision import frozen_low_precision_tensors, store_frozen_weights
from varestorer.training.loss_terms import LossTermConfig

TERMS = (LossTermConfig("mse", 0.5), LossTermConfig("kl", 0.1))


def _setup(**train: object) -> DistillSetup:
    student = preset_student("tiny", {"lora_rank": 2, "lora_alpha": 2.0, "precleaner": RECIPE_PRECLEANER})
    config = TrainConfig(batch_size=2, mixed_precision="bf16", **train)  # type: ignore[arg-type]
    return DistillSetup(student, TERMS, config, name="tiny")


def _step(module: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 3, 64, 64, generator=generator)
    batch = {"gt": gt, "lq": torch.nn.functional.interpolate(gt, scale_factor=0.25, mode="area"), "caption": [""] * 2}
    module.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = module(batch, 0)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_same_loss_and_gradients_to_bf16_rounding() -> None:
    torch.manual_seed(0)
    module = build_distillation(_setup(), "cpu").train()
    with torch.no_grad():  # trained adapters (B = 0 at the start would make W + BA = W: exact in bf16 too)
        for name, param in module.named_parameters():
            if "lora" in name:
                param.normal_(0, 0.05)
    loss, grads = _step(module)
    assert store_frozen_weights(module, torch.bfloat16) > 0
    loss_low, grads_low = _step(module)
    torch.testing.assert_close(loss_low, loss, rtol=2e-2, atol=1e-4)
    assert grads.keys() == grads_low.keys() and any("lora" in name for name in grads)
    for name, grad in grads.items():
        assert grads_low[name].dtype == torch.float32  # trainable tensors stay float32
        cosine = torch.nn.functional.cosine_similarity(grads_low[name].flatten(), grad.flatten(), dim=0)
        assert cosine > 0.99 or grad.abs().max() < 1e-8, (name, float(cosine))


def test_only_frozen_linear_and_conv_tensors_change() -> None:
    module = build_distillation(_setup(), "meta")
    tensors = frozen_low_precision_tensors(module)
    assert tensors and all(not t.requires_grad for t in tensors)
    store_frozen_weights(module, torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in frozen_low_precision_tensors(module))
    assert all(p.dtype == torch.float32 for p in module.parameters() if p.requires_grad)
    norms = [m.weight for m in module.modules() if isinstance(m, torch.nn.GroupNorm | torch.nn.LayerNorm)]
    assert all(w is None or w.dtype == torch.float32 for w in norms)


@pytest.mark.slow  # two traces of the tiny student: ~5 s on the 2-core CPU
def test_the_memory_model_counts_the_stored_bytes() -> None:
    plain = predict_memory(_setup(), target="cpu").parts["frozen_weights"]
    low = predict_memory(_setup(frozen_weights_dtype="bfloat16"), target="cpu").parts["frozen_weights"]
    assert 0.45 * plain < low < 0.7 * plain


def test_bf16_storage_needs_bf16_autocast() -> None:
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(frozen_weights_dtype="bfloat16")
