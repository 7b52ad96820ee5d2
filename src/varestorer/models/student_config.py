"""Configuration of the one-step VARestorer student (paper §3.2-3.4, appendix A)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from varestorer.archs.srvgg import SRVGGConfig
from varestorer.tokenizer.config import TokenizerConfig, tokenizer_preset
from varestorer.tokenizer.scales import infinity_schedule
from varestorer.transformer.config import TextEncoderConfig, TransformerConfig, transformer_preset

# Infinity's attention projections. Its blocks read these weights through F.linear, which is why LoRA
# is injected as a weight parametrization (nn/lora.py) rather than by swapping modules.
# Only the blocks' projections ("blocks.N." or Infinity's "block_chunks.C.module.J."), not the text pooling.
DEFAULT_LORA_TARGETS: tuple[str, ...] = tuple(
    f"block{layout}.{name}"
    for layout in ("s.*", "_chunks.*")
    for name in ("sa.mat_qkv", "sa.proj", "ca.mat_q", "ca.mat_kv", "ca.proj")
)


@dataclass(frozen=True)
class StudentConfig:
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The teacher's tokenizer (the student encoder starts as a copy of its encoder)."""
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    """The teacher's transformer (frozen; adapted by LoRA)."""
    teacher: str | None = None
    """Path of the teacher checkpoint folder (``tokenizer/`` + ``transformer/``). Adapter-only student
    checkpoints rebuild from it; a relative path is taken relative to the student folder."""
    scale: int = 4
    """Native super-resolution factor: LQ side = ``image_size / scale``."""
    image_size: int = 256
    """Working (HQ) size in pixels; a multiple of the tokenizer stride."""
    schedule: tuple[tuple[int, int], ...] | None = None
    """Token grids coarse to fine; ``None``: the tokenizer's default for ``image_size``."""
    attention: Literal["full", "causal"] = "full"
    """``full``: every scale sees every LQ scale (the paper). ``causal``: the teacher's block-causal mask (ablation)."""
    lora_rank: int = 32
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    train_encoder: bool = True
    """Fine-tune the copied encoder so it produces the LQ pyramid (the paper does)."""
    train_decoder: bool = False
    """Also fine-tune the decoder on the image losses. The paper keeps it frozen (shared with the teacher);
    a small tokenizer trained briefly (the CPU default) reconstructs poorly and gains from it."""
    precleaner: SRVGGConfig | None = None
    """Optional same-size pre-cleaner run on the LQ before encoding (the paper's light SwinIR role)."""
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    """The teacher's text encoder, for prompts (``none``: the learned unconditional tokens only)."""
    color_fix: Literal["none", "adain", "wavelet"] = "none"
    """Colour correction the Restorer applies by default (``--color-fix`` overrides it)."""
    merged: bool = False
    """True for an exported checkpoint: LoRA folded in, every weight stored, no teacher needed."""

    def __post_init__(self) -> None:
        stride = self.tokenizer.stride
        if self.scale < 1 or self.image_size % (stride * self.scale):
            raise ValueError(f"image_size {self.image_size} must be a multiple of stride*scale = {stride * self.scale}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.transformer.token_dim != self.tokenizer.token_dim:
            raise ValueError(
                f"transformer token_dim {self.transformer.token_dim} != tokenizer token_dim {self.tokenizer.token_dim}"
            )


def _student(tokenizer: str, transformer: str, **kwargs: object) -> StudentConfig:
    return StudentConfig(
        tokenizer=tokenizer_preset(tokenizer),
        transformer=transformer_preset(transformer),
        **kwargs,  # type: ignore[arg-type]
    )


_INFINITY_512 = infinity_schedule(512, 512)  # Infinity's scale template at 512 px (10 scales, 2521 tokens)

STUDENT_PRESETS: dict[str, StudentConfig] = {
    # Tests: 64 px working size, 16 px LQ, milliseconds.
    "tiny": _student("tiny", "tiny", image_size=64, lora_rank=2, lora_alpha=2.0),
    # A CPU-sized student: 128 px LQ -> 512 px, small tokenizer (stride 16) and transformer. (The embedded
    # default, src/varestorer/weights/default/config.json, is a stride-8 variant of it at 256 px.)
    "small": _student("small", "small", image_size=512, lora_rank=16, lora_alpha=16.0),
    # An Infinity-125M-shaped student on the d32 tokenizer (for `varestorer bench`).
    "infinity-125m": _student("infinity-d32", "infinity-125m", image_size=512, schedule=_INFINITY_512),
    # The paper's model: Infinity-2B + the d32 tokenizer at 512 px, LoRA rank 32 (paper §4.1).
    "infinity-2b": _student(
        "infinity-d32", "infinity-2b", image_size=512, lora_rank=32, lora_alpha=32.0, schedule=_INFINITY_512
    ),
}
"""Named student shapes (random teacher weights until ``Student.from_teacher`` fills them); ``varestorer
bench`` measures them and ``varestorer inspect student:NAME`` prints them."""
