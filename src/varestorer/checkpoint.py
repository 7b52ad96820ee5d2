"""Checkpoints: ``config.json`` + ``model.safetensors`` folders, foreign state dicts, strict loading.

A folder written by :func:`save_pretrained` rebuilds its model with no extra arguments. Foreign
files (``.pth``/``.pt``/``.bin``) are read with ``torch.load(weights_only=True)``: no pickled code
ever runs. Loading is strict: missing, unexpected or mis-shaped tensors raise a ``ValueError`` that
lists them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from varestorer import __version__
from varestorer.config import config_from_dict, config_to_dict
from varestorer.io.atomic import atomic_directory

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_LIST_LIMIT = 12

M = TypeVar("M", bound="PretrainedMixin")


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Read tensors from ``.safetensors`` or a torch file (``weights_only=True``), on the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is corrupt, truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    except Exception as error:  # pickle.UnpicklingError and friends from weights_only loading
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: refused or unreadable torch file ({first[:200]})") from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return dict(state)


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def check_state_dict(module: nn.Module, state_dict: Mapping[str, Any], *, what: str = "checkpoint") -> None:
    """Raise one ``ValueError`` listing missing, unexpected and mis-shaped tensors, if any."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if isinstance(state_dict[k], torch.Tensor) and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_names(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with wrong shape: {_names(mismatched)}")
    if problems:
        raise ValueError(f"{what} does not match {type(module).__name__}: " + "; ".join(problems))


def load_strict(module: nn.Module, state_dict: Mapping[str, Any], *, what: str = "checkpoint") -> None:
    """Copy ``state_dict`` into ``module`` after :func:`check_state_dict` passes."""
    check_state_dict(module, state_dict, what=what)
    module.load_state_dict(dict(state_dict), strict=True)


def _unshared(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): clone the repeats."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else (0, id(key))
        out[key] = tensor.clone().contiguous() if ident in seen else tensor.contiguous()
        seen.add(ident)
    return out


def save_pretrained(
    directory: str | Path,
    model_type: str,
    config: Any,
    state_dict: Mapping[str, torch.Tensor],
    *,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` atomically.

    ``config.json`` holds ``{"model_type", "varestorer_version", "config", **extra}``.
    """
    meta = {"model_type": model_type, "varestorer_version": __version__, "config": config_to_dict(config)}
    meta.update(extra or {})
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        save_file(_unshared(state_dict), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    return Path(directory)


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder.

    Raises:
        FileNotFoundError: no folder or no ``config.json``.
        ValueError: the JSON is unreadable or lacks ``model_type``/``config``.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"not a varestorer checkpoint folder (no {CONFIG_NAME}): {directory}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable JSON ({error})") from None
    if not isinstance(meta, dict) or "model_type" not in meta or "config" not in meta:
        raise ValueError(f"{path}: missing 'model_type' or 'config'")
    return meta


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built from one config dataclass.

    Subclasses set ``config_class`` and keep their config in ``self.config``.
    """

    config_class: ClassVar[type]
    config: Any

    def save_pretrained(self, directory: str | Path, *, overwrite: bool = False, **extra: Any) -> Path:
        assert isinstance(self, nn.Module)
        return save_pretrained(
            directory, type(self).__name__, self.config, self.state_dict(), extra=extra, overwrite=overwrite
        )

    @classmethod
    def from_pretrained(cls: type[M], directory: str | Path, *, device: str | torch.device = "cpu") -> M:
        meta = read_config(directory)
        if meta["model_type"] != cls.__name__:
            raise ValueError(f"{directory} holds a {meta['model_type']}, not a {cls.__name__}")
        config = config_from_dict(cls.config_class, meta["config"])
        model = cls(config)  # type: ignore[call-arg]
        assert isinstance(model, nn.Module)
        load_strict(model, load_state_dict(Path(directory) / WEIGHTS_NAME), what=str(directory))
        return model.to(device).eval()
