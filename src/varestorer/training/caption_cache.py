"""Caption features computed once per caption, kept in host memory.

Every epoch shows the same captions again; encoding them anew each step runs the text encoder
(Infinity: flan-t5-xl, 1.2B parameters) on the training device beside the student. The cache encodes
each distinct caption once, on the encoder's own device (the CPU by default, so the encoder never
takes accelerator memory), stores its valid rows on the CPU and assembles each batch's
:class:`TextCondition` from there, right-padded with zeros to the batch's longest caption, exactly
as :class:`~varestorer.transformer.text.TextEncoder` pads a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from varestorer.transformer.text import TextCondition

Encode = Callable[[list[str]], TextCondition]


class CaptionCache:
    """``cache(captions, device) -> TextCondition``; each distinct caption is encoded once.

    Args:
        encode: captions -> features (e.g. a :class:`~varestorer.transformer.text.TextEncoder`).
        dtype: storage dtype of the cached rows (float32 keeps them exact).
    """

    def __init__(self, encode: Encode, *, dtype: torch.dtype = torch.float32) -> None:
        self.encode = encode
        self.dtype = dtype
        self._rows: dict[str, Tensor] = {}
        self.encoded = 0
        """How many captions went through the encoder so far (the rest came from the cache)."""

    def __len__(self) -> int:
        return len(self._rows)

    def __call__(self, captions: Sequence[str], device: torch.device | str | None = None) -> TextCondition:
        captions = list(captions)
        if not captions:
            raise ValueError("no captions to encode")
        missing = list(dict.fromkeys(c for c in captions if c not in self._rows))
        if missing:
            features = self.encode(missing)
            for index, caption in enumerate(missing):
                length = int(features.lengths[index])
                self._rows[caption] = features.tokens[index, :length].detach().to("cpu", self.dtype).clone()
            self.encoded += len(missing)
        rows = [self._rows[c] for c in captions]
        width = rows[0].shape[-1]
        tokens = torch.zeros(len(rows), max(r.shape[0] for r in rows), width, dtype=torch.float32)
        for index, row in enumerate(rows):
            tokens[index, : row.shape[0]] = row.float()
        lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
        return TextCondition(tokens, lengths).to(device)
