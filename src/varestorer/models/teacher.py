"""``Teacher``: tokenizer + next-scale transformer + text-encoder config, saved as one folder.

Folder layout: ``config.json`` (``model_type: "Teacher"`` and a :class:`TeacherConfig`), then the
two models as their own checkpoint folders ``tokenizer/`` and ``transformer/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import varestorer.checkpoint as checkpoint
from varestorer.checkpoint import CONFIG_NAME, read_config
from varestorer.config import config_from_dict, config_to_dict
from varestorer.io.atomic import atomic_directory
from varestorer.models.teacher_config import TeacherConfig
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.tokenizer.scales import Schedule
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.sampler import check_compatible, sample_scales
from varestorer.transformer.text import TextCondition, TextEncoder, load_text_encoder


class PromptEncoding:
    """``encode_prompts`` for a model whose ``config.text_encoder`` names its caption encoder and which holds a
    ``transformer`` (``Teacher``, ``Student``): the encoder is loaded on the first prompts, on the
    transformer's device, into ``_text_encoder`` (which the model sets to None when built)."""

    no_text_encoder: ClassVar[str] = "this model has no text encoder; omit the prompt"
    """The one-line error for prompts to a model whose ``text_encoder.kind`` is ``"none"``."""
    _text_encoder: TextEncoder | None

    def encode_prompts(self, prompts: list[str]) -> TextCondition:
        """Prompts -> text tokens with ``config.text_encoder`` (loaded on first use, not saved with the model)."""
        model: Any = self  # a Teacher or a Student: both have config.text_encoder and transformer
        if model.config.text_encoder.kind == "none":
            raise ValueError(self.no_text_encoder)
        if self._text_encoder is None:
            encoder = load_text_encoder(model.config.text_encoder, device=model.transformer.pos_start.device)
            # object.__setattr__: an nn.Module assigned to a module attribute becomes a submodule, and the
            # encoder's weights would then enter state_dict(), save_pretrained and merged exports.
            object.__setattr__(self, "_text_encoder", encoder)
        assert self._text_encoder is not None
        return self._text_encoder(prompts)


class Teacher(PromptEncoding, nn.Module):
    """A text-to-image next-scale model: sample token pyramids, decode them to images.

    Args:
        tokenizer: the multi-scale tokenizer (its quantizer gives the transformer's inputs).
        transformer: the next-scale transformer; ``token_dim`` must equal the tokenizer's.
        config: text encoder and default sampling knobs.
    """

    config_class = TeacherConfig
    no_text_encoder = "this teacher has no text encoder (text_encoder.kind is 'none'); omit the prompt"

    def __init__(
        self, tokenizer: MultiScaleTokenizer, transformer: NextScaleTransformer, config: TeacherConfig | None = None
    ) -> None:
        super().__init__()
        check_compatible(transformer, tokenizer.quantizer)
        self.config = config or TeacherConfig()
        self.tokenizer = tokenizer
        self.transformer = transformer
        self._text_encoder: TextEncoder | None = None

    # -------------------------------------------------------------------------------- checkpoints
    def save_pretrained(
        self, directory: str | Path, *, overwrite: bool = False, max_shard_bytes: int | None = None
    ) -> Path:
        """Write ``config.json``, ``tokenizer/`` and ``transformer/`` atomically into ``directory``.

        ``max_shard_bytes`` shards each model's weights (see :func:`varestorer.checkpoint.save_pretrained`).
        """
        meta = {
            "model_type": "Teacher",
            "varestorer_version": checkpoint.__version__,
            "config": config_to_dict(self.config),
        }
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            self.tokenizer.save_pretrained(tmp / "tokenizer", max_shard_bytes=max_shard_bytes)
            self.transformer.save_pretrained(tmp / "transformer", max_shard_bytes=max_shard_bytes)
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> Teacher:
        """Rebuild a teacher saved by :meth:`save_pretrained` (strict weights), in ``eval()`` mode."""
        meta = read_config(directory)
        if meta["model_type"] != "Teacher":
            raise ValueError(f"{directory} holds a {meta['model_type']}, not a Teacher")
        config = config_from_dict(TeacherConfig, meta["config"])
        tokenizer = cls.tokenizer_of(directory, device=device)
        transformer = NextScaleTransformer.from_pretrained(Path(directory) / "transformer", device=device)
        return cls(tokenizer, transformer, config).eval()

    @staticmethod
    def tokenizer_of(directory: str | Path, *, device: str | torch.device = "cpu") -> Any:
        """Only the tokenizer of a teacher folder (any tokenizer family), in ``eval()`` mode; the transformer
        is not read (``varestorer reconstruct`` of a teacher or of an adapter student). A tokenizer folder
        itself: :func:`varestorer.tokenizer.loading.load_tokenizer`."""
        meta = read_config(directory)
        if meta["model_type"] != "Teacher":
            raise ValueError(f"{directory} holds a {meta['model_type']}, not a Teacher")
        return load_tokenizer(Path(directory) / "tokenizer", device=device)

    # -------------------------------------------------------------------------------------- sample
    def schedule(self, height: int | None = None, width: int | None = None) -> Schedule:
        """The token schedule for an output of ``height`` x ``width`` px (default ``config.image_size``)."""
        height = height or self.config.image_size
        width = width or height
        if height % self.tokenizer.stride or width % self.tokenizer.stride:
            raise ValueError(f"image size {height}x{width} is not a multiple of {self.tokenizer.stride}")
        if self.config.scales is not None and height == width == self.config.image_size:
            grid = height // self.tokenizer.stride
            if self.config.scales[-1] != grid:
                raise ValueError(f"scales {self.config.scales} must end at the latent grid {grid} of {height}px")
            return tuple((side, side) for side in self.config.scales)
        return self.tokenizer.default_schedule(height, width)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str] | None = None,
        num_images: int = 1,
        *,
        height: int | None = None,
        width: int | None = None,
        cfg_scale: float | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample images.

        Args:
            prompts: one caption per image, or ``None`` for ``num_images`` unconditional images.
            num_images: used when ``prompts`` is ``None``.
            cfg_scale, temperature, top_p: override the config's defaults.

        Returns:
            (B, 3, height, width) images in [-1, 1].
        """
        schedule = self.schedule(height, width)
        text = self.encode_prompts(prompts) if prompts else None
        labels = sample_scales(
            self.transformer,
            self.tokenizer.quantizer,
            schedule,
            text,
            batch_size=None if text is not None else num_images,
            cfg_scale=self.config.cfg_scale if cfg_scale is None else cfg_scale,
            temperature=self.config.temperature if temperature is None else temperature,
            top_p=self.config.top_p if top_p is None else top_p,
            generator=generator,
        )
        return self.tokenizer.labels_to_image(labels, schedule)
