"""Low-rank adapters (LoRA, Hu et al. 2021) as weight parametrizations.

The adapter is registered on a module's ``weight`` with ``torch.nn.utils.parametrize``, so every
read of ``module.weight`` returns ``W + (alpha / rank) * B @ A``. This matters for Infinity-style
blocks, which call ``F.linear(x, self.mat_qkv.weight, bias)`` directly: swapping the module for a
wrapper (what PEFT does) would miss those calls, a parametrization cannot.

``A`` starts Kaiming-uniform and ``B`` at zero, so an injected model computes exactly what the base
model computed until training moves ``B``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

LORA_MARKER = "lora_"


class LoRAWeight(nn.Module):
    """Parametrization ``W -> W + scaling * B @ A`` for a 2-D weight of shape (out, in)."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.enabled = True
        """False (see :func:`lora_disabled`): the base weight itself, unchanged."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        delta = (self.lora_B @ self.lora_A) * self.scaling
        return weight + delta.to(weight.dtype)


def _targets(model: nn.Module, patterns: Iterable[str]) -> list[tuple[str, nn.Module]]:
    patterns = list(patterns)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if any(fnmatch.fnmatchcase(name, p) for p in patterns)
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.ndim == 2
    ]
    if not found:
        raise ValueError(f"no linear weight in the model matches the LoRA targets {patterns}")
    return found


def inject_lora(model: nn.Module, targets: Iterable[str], *, rank: int, alpha: float | None = None) -> list[str]:
    """Add a LoRA parametrization to every 2-D ``weight`` of modules whose name matches a glob in ``targets``.

    Args:
        model: modified in place; its other parameters are untouched (freeze them yourself).
        targets: ``fnmatch`` patterns over ``named_modules()`` names, e.g. ``"*.sa.mat_qkv"``.
        rank: adapter rank r.
        alpha: scaling numerator (``scaling = alpha / rank``); defaults to ``rank`` (scaling 1).

    Returns:
        The names of the adapted modules.
    """
    alpha = float(rank if alpha is None else alpha)
    names = []
    for name, module in _targets(model, targets):
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"{name}.weight already carries a parametrization (LoRA injected twice?)")
        out_features, in_features = module.weight.shape  # type: ignore[misc]  # a Linear's 2-D weight
        adapter = LoRAWeight(out_features, in_features, rank, alpha).to(module.weight.device)  # type: ignore[arg-type]
        parametrize.register_parametrization(module, "weight", adapter)
        names.append(name)
    return names


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters (``lora_A``/``lora_B``) of ``model``."""
    return [p for n, p in model.named_parameters() if LORA_MARKER in n.rsplit(".", 1)[-1]]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, keyed by their full names (what a student checkpoint stores)."""
    return {n: p.detach() for n, p in model.named_parameters() if LORA_MARKER in n.rsplit(".", 1)[-1]}


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[int]:
    """Run ``model`` as its base inside the block: every adapter returns the base weight unchanged.

    A student initialised from its teacher and frozen outside the adapters *is* the teacher with
    adapters off, so the teacher pass needs no second copy of the weights. Yields how many adapters
    were switched off; restores each one's previous state afterwards (also on errors).
    """
    adapters = [m for m in model.modules() if isinstance(m, LoRAWeight)]
    previous = [a.enabled for a in adapters]
    for adapter in adapters:
        adapter.enabled = False
    try:
        yield len(adapters)
    finally:
        for adapter, state in zip(adapters, previous):
            adapter.enabled = state


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight and remove the parametrizations; returns how many."""
    merged = 0
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, LoRAWeight)
            for p in module.parametrizations["weight"]  # type: ignore[index]
        ):
            with torch.no_grad():
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            merged += 1
    return merged


def base_weight_key(key: str) -> str:
    """Map a parametrized key back to the plain one: ``x.parametrizations.weight.original`` -> ``x.weight``."""
    return key.replace(".parametrizations.weight.original", ".weight")


def to_parametrized_keys(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename plain ``x.weight`` keys of a base model to ``x.parametrizations.weight.original`` where ``model``
    carries a parametrization on ``x.weight``, so base weights load into an adapted model."""
    adapted = {name for name, m in model.named_modules() if parametrize.is_parametrized(m, "weight")}
    out = {}
    for key, value in state_dict.items():
        module_name, _, leaf = key.rpartition(".")
        out[
            f"{module_name}.parametrizations.weight.original" if leaf == "weight" and module_name in adapted else key
        ] = value
    return out
