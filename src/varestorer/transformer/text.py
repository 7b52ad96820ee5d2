"""Text conditioning: the ``TextCondition`` value and pluggable text encoders.

``none`` uses no encoder at all (the transformer's learned unconditional tokens stand in for text);
``transformers`` runs any encoder from a local folder (Infinity: flan-t5-xl, a ``T5EncoderModel``)
and keeps its ``last_hidden_state``. ``transformers`` is imported only when an encoder is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from varestorer.transformer.config import TextEncoderConfig


@dataclass(frozen=True)
class TextCondition:
    """Encoded captions, right-padded.

    Attributes:
        tokens: (B, T, D) float features; rows at or past a caption's length are padding.
        lengths: (B,) int64 number of valid tokens per caption, each in [1, T].
    """

    tokens: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3:
            raise ValueError(f"text tokens must be (B, T, D), got shape {tuple(self.tokens.shape)}")
        if self.lengths.shape != (self.tokens.shape[0],):
            raise ValueError(f"text lengths must be ({self.tokens.shape[0]},), got {tuple(self.lengths.shape)}")
        if len(self.lengths) and (int(self.lengths.min()) < 1 or int(self.lengths.max()) > self.tokens.shape[1]):
            raise ValueError(f"text lengths must be in [1, {self.tokens.shape[1]}]")

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def mask(self) -> Tensor:
        """(B, T) bool, True on valid tokens."""
        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return positions[None, :] < self.lengths.to(self.tokens.device)[:, None]

    @property
    def pooled(self) -> Tensor:
        """(B, D) mean of the valid tokens (a plain summary; the transformer pools attentively itself)."""
        mask = self.mask.to(self.tokens.dtype)[..., None]
        return (self.tokens * mask).sum(1) / mask.sum(1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextCondition:
        return TextCondition(self.tokens.to(device=device, dtype=dtype), self.lengths.to(device))

    def repeat(self, times: int) -> TextCondition:
        """Each caption ``times`` times in a row: (B * times, T, D)."""
        return TextCondition(self.tokens.repeat_interleave(times, 0), self.lengths.repeat_interleave(times, 0))

    @staticmethod
    def cat(conditions: Sequence[TextCondition]) -> TextCondition:
        """Concatenate along the batch, padding to the longest T."""
        if not conditions:
            raise ValueError("nothing to concatenate")
        T = max(c.tokens.shape[1] for c in conditions)
        tokens = [torch.nn.functional.pad(c.tokens, (0, 0, 0, T - c.tokens.shape[1])) for c in conditions]
        return TextCondition(torch.cat(tokens), torch.cat([c.lengths for c in conditions]))


class TextEncoder(nn.Module):
    """A ``transformers`` encoder + tokenizer turning captions into a :class:`TextCondition`.

    Args:
        model: an encoder returning ``last_hidden_state`` (B, T, D) from ``input_ids``/``attention_mask``.
        tokenizer: callable like a ``transformers`` tokenizer (returns ``input_ids``, ``attention_mask``).
        max_length: captions are truncated to this many tokens.
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[..., Any], max_length: int = 512) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def dim(self) -> int:
        """D, the width of the features."""
        config: Any = self.model.config
        return int(config.d_model if hasattr(config, "d_model") else config.hidden_size)

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> TextCondition:
        """Encode a batch of captions; returns float32 features on the encoder's device."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError("prompts must be a non-empty list of strings")
        batch = self.tokenizer(
            list(prompts), max_length=self.max_length, padding="longest", truncation=True, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        lengths = mask.sum(1).long()
        if int(lengths.min()) < 1:
            raise ValueError("a prompt encoded to zero tokens; give a non-empty caption")
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        # Zero the padding so that features do not depend on the batch's longest caption.
        return TextCondition(hidden * mask[..., None].to(hidden.dtype), lengths)

    @classmethod
    def from_pretrained(
        cls, path: str, *, max_length: int = 512, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> TextEncoder:
        """Load tokenizer and encoder from a local folder (T5 family: only the encoder is built)."""
        from pathlib import Path

        if not Path(path).is_dir():
            raise FileNotFoundError(f"text encoder folder not found: {path}")
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        config = transformers.AutoConfig.from_pretrained(path)
        if config.model_type in ("t5", "mt5", "umt5"):
            model = transformers.T5EncoderModel.from_pretrained(path, dtype=dtype)
        else:
            model = transformers.AutoModel.from_pretrained(path, dtype=dtype)
            if getattr(config, "is_encoder_decoder", False):
                model = model.get_encoder()
        return cls(model.to(device).eval().requires_grad_(False), tokenizer, max_length)  # type: ignore[arg-type]


def load_text_encoder(
    config: TextEncoderConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> TextEncoder | None:
    """The encoder a :class:`TextEncoderConfig` names, or ``None`` for ``kind="none"``."""
    if config.kind == "none":
        return None
    if config.path is None:
        raise ValueError("text encoder kind 'transformers' needs a path")
    return TextEncoder.from_pretrained(config.path, max_length=config.max_length, device=device, dtype=dtype)
