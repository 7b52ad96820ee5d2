"""Open any tokenizer folder: dispatch on ``config.json``'s ``model_type`` through the family registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from varestorer.families import load_pretrained


def load_tokenizer(directory: str | Path, *, device: str | torch.device = "cpu") -> Any:
    """The tokenizer saved in ``directory`` (any family with ``is_tokenizer`` in ``varestorer.families``),
    in ``eval()`` mode.

    Raises:
        FileNotFoundError: not a checkpoint folder.
        ValueError: the folder holds something that is not a tokenizer, or its weights do not match.
    """
    return load_pretrained(directory, require="is_tokenizer", device=device, what="a tokenizer").eval()


__all__ = ["load_tokenizer"]
