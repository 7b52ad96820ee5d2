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
    cfg_scale: float = 3.0
    """Default classifier-free guidance weight on logits (used only with a prompt)."""
    temperature: float = 1.0
    """Default sampling temperature."""
    top_p: float = 0.97
    """Default nucleus per bit."""
