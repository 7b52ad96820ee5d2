"""Open any tokenizer folder: dispatch on ``config.json``'s ``model_type`` (one literal table)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from varestorer.checkpoint import read_config

TOKENIZER_TYPES: dict[str, str] = {
    "MultiScaleTokenizer": "varestorer.tokenizer.autoencoder:MultiScaleTokenizer",
    "TAEF2Tokenizer": "varestorer.tokenizer.taef2:TAEF2Tokenizer",
}
"""``model_type`` of a tokenizer folder -> ``module:Class`` with ``from_pretrained``."""


def load_tokenizer(directory: str | Path, *, device: str | torch.device = "cpu") -> Any:
    """The tokenizer saved in ``directory`` (any family of ``TOKENIZER_TYPES``), in ``eval()`` mode.

    Raises:
        FileNotFoundError: not a checkpoint folder.
        ValueError: the folder holds something that is not a tokenizer, or its weights do not match.
    """
    model_type = read_config(directory)["model_type"]
    if model_type not in TOKENIZER_TYPES:
        raise ValueError(f"{directory} holds a {model_type}, not a tokenizer ({', '.join(TOKENIZER_TYPES)})")
    module_name, class_name = TOKENIZER_TYPES[model_type].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_pretrained(directory, device=device)


__all__ = ["TOKENIZER_TYPES", "load_tokenizer"]
