"""Configuration and file layout of the authors' released VARestorer (``EternalEvan/VARestorer``).

A release folder holds the four files of the official ``scripts/infer.sh`` under their own names
(:data:`OFFICIAL_FILES`): the fine-tuned Infinity-2B with LoRA adapters (``varestorer.pth``), the
Infinity d32 tokenizer, DiffBIR's SwinIR stage-one cleaner, and the flan-t5-xl text encoder folder.
Such a folder needs no ``config.json``; one written by :func:`write_official_config` may change the
defaults (file names, prompt, sampling). Imports no model code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from varestorer.archs.swinir_config import SwinIRConfig
from varestorer.config import config_from_dict, config_to_dict
from varestorer.tokenizer.config import TokenizerConfig, tokenizer_preset
from varestorer.transformer.config import TextEncoderConfig, TransformerConfig, transformer_preset

MODEL_TYPE = "OfficialVARestorer"

OFFICIAL_FILES: dict[str, str] = {
    "transformer": "varestorer.pth",
    "tokenizer": "infinity_vae_d32reg.pth",
    "swinir": "general_swinir_v1.ckpt",
    "text_encoder": "flan-t5-xl",
}
"""Part -> file (folder for the text encoder) name in a release folder, as ``scripts/infer.sh`` names them."""

OFFICIAL_HUB_ID = "EvanEternal/VARestorer"
"""``from_pretrained`` / ``--model`` name of the release on the Hugging Face Hub."""

OFFICIAL_HUB_FILES: dict[str, tuple[str, str | None]] = {
    "transformer": ("EvanEternal/VARestorer", "weights/varestorer.pth"),
    "tokenizer": ("FoundationVision/Infinity", "infinity_vae_d32reg.pth"),
    "swinir": ("lxq007/DiffBIR", "general_swinir_v1.ckpt"),
    "text_encoder": ("google/flan-t5-xl", None),  # the whole folder (config, tokenizer, safetensors weights)
}
"""Part -> (Hub repository, file in it) of the official README's download list."""

T5_PATTERNS = ["*.json", "spiece.model", "*.safetensors"]
"""What of google/flan-t5-xl is fetched: config, tokenizer and the safetensors shards."""

# The official inject_trainable_lora(block_chunks, {"CrossAttention", "SelfAttention"}, r=32) wraps every
# nn.Linear inside the blocks' attentions (not the text pooling, which sits outside block_chunks).
OFFICIAL_LORA_TARGETS: tuple[str, ...] = ("sa.mat_qkv", "sa.proj", "ca.mat_q", "ca.mat_kv", "ca.proj")


@dataclass(frozen=True)
class OfficialFiles:
    """File names inside the release folder (see :data:`OFFICIAL_FILES`)."""

    transformer: str = OFFICIAL_FILES["transformer"]
    tokenizer: str = OFFICIAL_FILES["tokenizer"]
    swinir: str | None = OFFICIAL_FILES["swinir"]
    """``None``: no stage-one cleaner (not the official pipeline)."""
    text_encoder: str | None = OFFICIAL_FILES["text_encoder"]
    """Folder of flan-t5-xl; ``None`` or absent: the learned "no caption" tokens replace the prompt."""


@dataclass(frozen=True)
class OfficialConfig:
    """The official one-step restorer (``tools/run_varestorer.py`` with ``scripts/infer.sh``'s flags)."""

    transformer: TransformerConfig = field(default_factory=lambda: transformer_preset("infinity-2b"))
    tokenizer: TokenizerConfig = field(default_factory=lambda: tokenizer_preset("infinity-d32"))
    swinir: SwinIRConfig | None = field(default_factory=SwinIRConfig)
    scale: int = 4
    """``sr_scale``: the LQ is upsampled by this factor before the 512 px pass."""
    image_size: int = 512
    """Working size (pn 0.25M: 10 scales up to 32 x 32 tokens); the official tiles are 512 px."""
    lora_rank: int = 32
    lora_scale: float = 1.0
    """The adapters' ``scale`` (lora_diffusion's default 1.0): W' = W + scale * up @ down."""
    extra_lq_scale: bool = True
    """``requant_mode='long'``: after the L - 1 usual inputs the LQ's whole f_hat enters as one more
    block of last-scale tokens (level K, RoPE positions continuing on Infinity's 1M grid)."""
    cross_attention_value_bias: bool = False
    """The official LoRA-wrapped cross-attention calls ``mat_kv`` as a module and so never adds
    ``ca.v_bias``; False reproduces that, True uses the bias as Infinity does."""
    sampling: Literal["sample", "argmax"] = "sample"
    """``sample``: every bit drawn from softmax(logits) (the official Gumbel-argmax draw); ``argmax``:
    the likelier value (deterministic, not the official behaviour)."""
    seed: int | None = 0
    """Seed of the bit draw, reset for every batch of tiles (None: the global RNG)."""
    prompt: str = ""
    """Prompt used when the caller gives none (official default: the empty caption through T5)."""
    color_fix: Literal["none", "adain", "wavelet"] = "none"
    files: OfficialFiles = field(default_factory=OfficialFiles)

    def __post_init__(self) -> None:
        if self.scale < 1 or self.image_size % (16 * self.scale):
            raise ValueError(f"image_size {self.image_size} must be a multiple of 16 * scale ({16 * self.scale})")
        if self.transformer.token_dim != self.tokenizer.token_dim:
            raise ValueError("transformer and tokenizer disagree on the bits per token")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")

    def text_encoder_config(self, folder: Path) -> TextEncoderConfig:
        """The text encoder of a release folder: flan-t5-xl if its folder is there, else none."""
        name = self.files.text_encoder
        if name is None or not (folder / name).is_dir():
            return TextEncoderConfig(kind="none")
        return TextEncoderConfig(kind="transformers", path=str(folder / name), max_length=512)


def is_official_folder(folder: str | Path) -> bool:
    """True for a folder holding the official transformer file (and no varestorer ``config.json``)."""
    folder = Path(folder)
    return (
        folder.is_dir()
        and (folder / OFFICIAL_FILES["transformer"]).is_file()
        and not (folder / "config.json").is_file()
    )


def read_official_config(meta: dict[str, Any]) -> OfficialConfig:
    """The :class:`OfficialConfig` of a parsed ``config.json`` (``model_type`` must be ours)."""
    if meta.get("model_type") != MODEL_TYPE:
        raise ValueError(f"config.json holds a {meta.get('model_type')}, not an {MODEL_TYPE}")
    return config_from_dict(OfficialConfig, meta["config"])


def write_official_config(folder: str | Path, config: OfficialConfig, *, overwrite: bool = False) -> Path:
    """Write ``config.json`` into a release folder (e.g. to change file names, prompt or sampling)."""
    from varestorer.checkpoint import __version__
    from varestorer.io.atomic import atomic_path

    path = Path(folder) / "config.json"
    meta = {"model_type": MODEL_TYPE, "varestorer_version": __version__, "config": config_to_dict(config)}
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


OFFICIAL_PRESETS: dict[str, OfficialConfig] = {"varestorer-2b": OfficialConfig()}
"""Named shapes (``varestorer inspect official:varestorer-2b``): the released model."""
