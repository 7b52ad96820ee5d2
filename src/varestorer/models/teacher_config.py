"""``TeacherConfig``: what a teacher folder needs besides its tokenizer and transformer weights."""

from __future__ import annotations

from dataclasses import dataclass, field

from varestorer.transformer.config import TextEncoderConfig


@dataclass(frozen=True)
class TeacherConfig:
    """Text encoder and default sampling knobs of a :class:`~varestorer.models.teacher.Teacher`."""

    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    """Which encoder turns prompts into text tokens (``none``: unconditional only)."""
    image_size: int = 256
    """Default square output size in px (a multiple of the tokenizer stride)."""
    scales: tuple[int, ...] | None = None
    """Square token-grid sides at ``image_size``, coarse to fine (e.g. 1, 2, 4, 8, 16, 32: fewer tokens than
    the tokenizer's default schedule); ``None``: the tokenizer's default. Other sizes use the default."""
    cfg_scale: float = 3.0
    """Default classifier-free guidance weight on logits (used only with a prompt)."""
    temperature: float = 1.0
    """Default sampling temperature."""
    top_p: float = 0.97
    """Default nucleus per bit."""

    def __post_init__(self) -> None:
        if self.scales is not None and (not self.scales or list(self.scales) != sorted(set(self.scales))):
            raise ValueError(f"scales must be increasing square sides, got {self.scales}")
