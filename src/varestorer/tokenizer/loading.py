"""Open any tokenizer folder, or build any tokenizer family from its config: dispatch through the family
registry (``varestorer.families``) on the ``model_type`` (the class name ``config.json`` records)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from varestorer.config import config_from_dict
from varestorer.families import family, load_pretrained


def load_tokenizer(directory: str | Path, *, device: str | torch.device = "cpu") -> Any:
    """The tokenizer saved in ``directory`` (any family with ``is_tokenizer`` in ``varestorer.families``),
    in ``eval()`` mode.

    Raises:
        FileNotFoundError: not a checkpoint folder.
        ValueError: the folder holds something that is not a tokenizer, or its weights do not match.
    """
    return load_pretrained(directory, require="is_tokenizer", device=device, what="a tokenizer").eval()


def tokenizer_config_class(model_type: str) -> Any:
    """The config dataclass of the tokenizer family ``model_type`` (``MultiScaleTokenizer``, ``TAEF2Tokenizer``...).

    Raises:
        ValueError: no family has that name, or it is not a tokenizer.
    """
    entry = family(model_type)
    if not entry.is_tokenizer:
        raise ValueError(f"{model_type} is not a tokenizer family")
    return entry.config_class()


def tokenizer_config_from_dict(model_type: str, data: dict[str, Any], *, where: str | None = None) -> Any:
    """A ``config.json`` table -> the config dataclass of the tokenizer family ``model_type`` (strict keys)."""
    return config_from_dict(tokenizer_config_class(model_type), data, where=where)


def build_tokenizer(model_type: str, config: Any) -> Any:
    """A randomly initialised tokenizer of family ``model_type`` built from its ``config``.

    Raises:
        ValueError: not a tokenizer family, or ``config`` is not that family's config class.
    """
    config_class = tokenizer_config_class(model_type)
    if not isinstance(config, config_class):
        raise ValueError(f"a {model_type} needs a {config_class.__name__}, got a {type(config).__name__}")
    return family(model_type).model_class()(config)


__all__ = ["build_tokenizer", "load_tokenizer", "tokenizer_config_class", "tokenizer_config_from_dict"]
