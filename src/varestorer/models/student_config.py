"""Configuration of the one-step VARestorer student (paper §3.2-3.4, appendix A)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from varestorer.archs.srvgg import SRVGGConfig
from varestorer.models.lq_encoder import LQEncoderConfig
from varestorer.restore_spec import WAVELET_LEVELS
from varestorer.tokenizer.config import TokenizerConfig, tokenizer_preset
from varestorer.tokenizer.loading import tokenizer_config_class, tokenizer_config_from_dict
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
    tokenizer: Any = field(default_factory=TokenizerConfig)
    """The teacher's tokenizer config, of the family ``tokenizer_type`` (the student encoder starts as a copy
    of its encoder). A plain table (from ``config.json``) is read as that family's config."""
    tokenizer_type: str = "MultiScaleTokenizer"
    """The tokenizer family (its ``model_type`` in ``varestorer.families``, e.g. ``TAEF2Tokenizer``);
    ``config.json`` files written before this field are ``MultiScaleTokenizer``."""
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
    """Optional pre-cleaner run on the LQ before encoding (the paper's light SwinIR role)."""
    precleaner_resolution: Literal["lq", "output"] = "lq"
    """``lq``: the pre-cleaner's output is resized back to the LQ size, then bicubic to the working size
    (a same-size pre-cleaner, or an x4 one whose invented detail is discarded). ``output``: an upscaling
    pre-cleaner (realesr-general-x4v3's x4) feeds the encoder at its own output size, with no down/up
    resize (resized only when its factor differs from ``scale``)."""
    train_precleaner: bool = True
    """Train the pre-cleaner with the student; False keeps it frozen (a pretrained x4v3). Its weights are
    stored in adapter checkpoints either way (the teacher does not hold them)."""
    lq_bit_skip: bool = False
    """Beyond the paper: add ``g_k * (2b - 1) / 2`` to the bit-1 logit and subtract it from the bit-0 logit,
    with b the LQ's own bits at scale k (the quantised LQ latent) and g_k a learned gain per scale, so an
    untrained student starts near the LQ's tokens and the transformer learns corrections."""
    lq_bit_gain_init: float = 4.0
    """Initial value of every g_k of ``lq_bit_skip`` (a logit margin of g_k between the two bits)."""
    fidelity_path: bool = False
    """Beyond the paper (after StableSR's controllable feature wrapping): the decoder reads
    ``f_hat + w * (f_LQ - f_hat_LQ)``, the LQ latent's quantisation residual added back with a learned
    per-channel weight w (initialised to 1). With ``lq_bit_skip`` an untrained student outputs
    ``decoder(encoder(precleaner(lq)))``."""
    lq_encoder: LQEncoderConfig | None = None
    """Beyond the paper: encode the LQ at its own resolution (``models/lq_encoder.py``: a stem plus the TAEF2
    encoder's tail from ``tail_from`` on) instead of its working-size upsample; no pre-cleaner then (the stem
    does its work). None: the tokenizer encoder at the working size (the paper)."""
    decoder_skip_blocks: tuple[int, ...] = ()
    """Indices of TAEF2 decoder Blocks left out (identities) for speed, e.g. ``(15, 18)``: the last Block at
    128 px and the one at 256 px; the other layers keep their indices and start as the teacher's."""
    encoder_skip_blocks: tuple[int, ...] = ()
    """Indices of TAEF2 encoder Blocks left out (identities) for speed, e.g. ``(3, 4, 5)``: the three Blocks at
    half the working size; the other layers keep their indices and start as the teacher's. Not with
    ``lq_encoder`` (whose tail is the encoder's end)."""
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    """The teacher's text encoder, for prompts (``none``: the learned unconditional tokens only)."""
    lq_residual_control: bool = False
    """Beyond the paper: the LQ's own per-scale residuals (the quantiser's input before the sign, normalised per
    token; ``MultiScaleTokens.residuals``) of scales 2..K reach every transformer block through a zero-initialised
    control branch (models/control_branch.py), so the transformer sees which of the LQ's bits are barely decided.
    Without it, it reads only the LQ's coarser scales (its inputs) and the skip's fixed per-scale trust in the
    LQ's bits: it cannot tell a decided LQ bit from a coin flip, least of all at the last scale."""
    predicted_scales: int | None = None
    """Beyond the paper, for speed: the transformer runs over the first N scales of the schedule only and predicts
    their bits; the finer scales keep the LQ's own bits (the finest scale is 3/4 of the tokens, and attention
    grows with their square). None: every scale (the paper)."""
    color_fix: Literal["none", "adain", "wavelet"] = "none"
    """Colour correction the Restorer applies by default (``--color-fix`` overrides it)."""
    color_fix_levels: int = WAVELET_LEVELS
    """A-trous levels of the wavelet fix (``--color-fix-levels`` overrides it): the output keeps the frequencies
    above about ``2**levels`` output px and takes the coarser ones from the LQ. 5 is StableSR's; the default
    model ships 4 (docs/default_model.md, "v3M")."""
    tile_overlap: int | None = None
    """Overlap of neighbouring tiles (LQ px) the Restorer uses by default (``--tile-overlap`` overrides it);
    None: a quarter of the tile. Fewer overlapping pixels mean fewer tiles (docs/default_model_v2_design.md §3)."""
    merged: bool = False
    """True for an exported checkpoint: LoRA folded in, every weight stored, no teacher needed."""

    def __post_init__(self) -> None:
        if isinstance(self.tokenizer, dict):  # a config.json table: the family's own config
            tokenizer = tokenizer_config_from_dict(self.tokenizer_type, self.tokenizer, where="StudentConfig.tokenizer")
            object.__setattr__(self, "tokenizer", tokenizer)
        if not isinstance(self.tokenizer, tokenizer_config_class(self.tokenizer_type)):
            raise ValueError(
                f"tokenizer is a {type(self.tokenizer).__name__}, not a config of tokenizer_type {self.tokenizer_type}"
            )
        if self.predicted_scales is not None and self.predicted_scales < 1:
            raise ValueError(f"predicted_scales must be >= 1 (or None for every scale), got {self.predicted_scales}")
        if self.color_fix_levels < 1:
            raise ValueError(f"color_fix_levels must be >= 1, got {self.color_fix_levels}")
        if self.tile_overlap is not None and not 0 <= self.tile_overlap < self.image_size // self.scale:
            raise ValueError(
                f"tile_overlap must be in [0, LQ size {self.image_size // self.scale}), got {self.tile_overlap}"
            )
        if self.precleaner_resolution not in ("lq", "output"):
            raise ValueError(f"precleaner_resolution must be 'lq' or 'output', got {self.precleaner_resolution!r}")
        if self.lq_encoder is not None and self.encoder_skip_blocks:
            raise ValueError("encoder_skip_blocks applies to the tokenizer encoder, not to an lq_encoder")
        if self.lq_encoder is not None and self.precleaner is not None:
            raise ValueError("lq_encoder replaces the pre-cleaner (its stem cleans the LQ): set precleaner to None")
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
