"""The authors' released VARestorer (``EternalEvan/VARestorer``) as a ``OneStepSR`` model.

Their one-step forward (``tools/run_varestorer.py`` -> ``BInfinity.autoregressive_infer_cfg`` in
``infinity/models/infinity.py``), step by step, and how it differs from our
:class:`~varestorer.models.student.Student`:

1. The LQ is upsampled to the output size (``sr_scale``), cut into 512 px tiles, and each tile goes
   through DiffBIR's SwinIR (:mod:`varestorer.archs.swinir`) in [0, 1], unclamped.
2. The frozen Infinity d32 tokenizer encodes the cleaned tile (continuous features, no fine-tuned
   encoder copy). The transformer input is the usual L - 1 teacher-forcing inputs of the LQ pyramid
   *plus* (``requant_mode='long'``) the LQ's whole f_hat as one more block of h_K * w_K tokens, with
   level embedding K and RoPE positions continuing on Infinity's 1M position grid (its cache holds all
   13 template scales, sliced by position): L + h_K w_K tokens in all.
3. No attention mask at all (every token sees every token, the extra block too); logits are read
   at the first L positions only.
4. The prompt (default the empty caption) goes through flan-t5-xl and Infinity's text path; no CFG.
5. LoRA (rank 32, scale 1) wraps every linear of the blocks' self- and cross-attention
   (``lora_diffusion.inject_trainable_lora``), keys ``X.linear.weight``, ``X.lora_down.weight``,
   ``X.lora_up.weight``. Wrapping ``ca.mat_kv`` makes the official cross-attention skip
   ``ca.v_bias`` (``basic.py`` only adds it on the plain-linear path); we fold the adapters into the
   weights at load time and zero that bias (``cross_attention_value_bias``).
6. Every bit is *sampled* from softmax(logits) (a Gumbel-argmax draw), not taken as the likelier
   value; the codes are summed into f_hat and decoded.

Weights load strictly from the official files by their key names (``torch.load(weights_only=True)``),
memory-mapped and converted tensor by tensor to the load dtype (bfloat16 by default).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varestorer.archs.swinir import SwinIR, load_swinir
from varestorer.checkpoint import CONFIG_NAME, hub_file, hub_snapshot, load_state_dict, read_config
from varestorer.models.official_config import (
    OFFICIAL_HUB_FILES,
    OFFICIAL_HUB_ID,
    OFFICIAL_LORA_TARGETS,
    T5_PATTERNS,
    OfficialConfig,
    is_official_folder,
    read_official_config,
)
from varestorer.restore_spec import Restorable, RestoreSpec
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.infinity import load_infinity_tokenizer
from varestorer.tokenizer.scales import INFINITY_TEMPLATES, nearest_template_ratio
from varestorer.transformer.config import TextEncoderConfig
from varestorer.transformer.infinity import DERIVED_BUFFERS
from varestorer.transformer.model import NextScaleTransformer, scale_levels
from varestorer.transformer.rope import rope_extent, rope_table, scale_positions
from varestorer.transformer.sampler import sample_top_p
from varestorer.transformer.text import TextCondition, TextEncoder, load_text_encoder

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ weights
def _lora_modules(transformer: NextScaleTransformer) -> list[str]:
    """Names of the linears the official LoRA wraps (``block_chunks.c.module.j.sa.mat_qkv`` ...)."""
    return [
        name
        for name, module in transformer.named_modules()
        if isinstance(module, nn.Linear)
        and name.startswith(("blocks.", "block_chunks."))
        and ".".join(name.rsplit(".", 2)[-2:]) in OFFICIAL_LORA_TARGETS
    ]


def official_key_shapes(transformer: NextScaleTransformer, rank: int) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape ``varestorer.pth`` must hold for this transformer config."""
    shapes = {k: tuple(v.shape) for k, v in transformer.state_dict().items()}
    if rank == 0:
        return shapes
    for name in _lora_modules(transformer):
        out_features, in_features = shapes.pop(f"{name}.weight")
        shapes[f"{name}.linear.weight"] = (out_features, in_features)
        if f"{name}.bias" in shapes:
            shapes[f"{name}.linear.bias"] = shapes.pop(f"{name}.bias")
        shapes[f"{name}.lora_down.weight"] = (rank, in_features)
        shapes[f"{name}.lora_up.weight"] = (out_features, rank)
    return shapes


def _check_keys(state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], what: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    common = set(state) & set(expected)
    wrong = sorted(f"{k} {tuple(state[k].shape)} vs {expected[k]}" for k in common if state[k].shape != expected[k])
    problems = [
        f"{len(names)} {label}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("with wrong shape", wrong))
        if names
    ]
    if problems:
        raise ValueError(f"{what} is not the official VARestorer transformer: " + "; ".join(problems))


def official_transformer_state_dict(
    raw: Mapping[str, Any],
    transformer: NextScaleTransformer,
    config: OfficialConfig,
    dtype: torch.dtype,
    *,
    what: str = "checkpoint",
) -> dict[str, Tensor]:
    """Check ``varestorer.pth``'s tensors strictly, fold the adapters in, and return our names in ``dtype``.

    ``W' = W + lora_scale * up @ down`` is computed in float32, one tensor at a time.
    """
    if isinstance(raw.get("infinity"), Mapping):  # an older save wrapped the state dict as {"infinity": ...}
        raw = raw["infinity"]
    state = {k.removeprefix("module."): v for k, v in raw.items() if k.removeprefix("module.") not in DERIVED_BUFFERS}
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{what}: entries that are not tensors: {', '.join(bad[:8])}")
    _check_keys(state, official_key_shapes(transformer, config.lora_rank), what)
    out: dict[str, Tensor] = {}
    lora = set(_lora_modules(transformer)) if config.lora_rank else set()
    for name in lora:
        weight = state.pop(f"{name}.linear.weight").float()
        up, down = state.pop(f"{name}.lora_up.weight").float(), state.pop(f"{name}.lora_down.weight").float()
        out[f"{name}.weight"] = (weight + config.lora_scale * (up @ down)).to(dtype)
        if f"{name}.linear.bias" in state:
            out[f"{name}.bias"] = state.pop(f"{name}.linear.bias").to(dtype)
    for key, value in state.items():
        out[key] = value.to(dtype) if value.is_floating_point() else value
    if not config.cross_attention_value_bias:
        for key in [k for k in out if k.endswith(".ca.v_bias") and k.startswith(("blocks.", "block_chunks."))]:
            out[key] = torch.zeros_like(out[key])
    return out


# -------------------------------------------------------------------------------------------- model
class OfficialVARestorer(Restorable, nn.Module):
    """The released one-step VARestorer: LQ (B, 3, S/s, S/s) in [0, 1] -> SR (B, 3, S, S), S = 512.

    Build with :meth:`from_pretrained` (a release folder) or :meth:`from_files`; ``OfficialVARestorer(config)``
    alone has random weights (tests, shapes).
    """

    config_class = OfficialConfig

    def __init__(self, config: OfficialConfig | None = None, *, text_folder: str | None = None) -> None:
        super().__init__()
        self.config = config = config or OfficialConfig()
        tokenizer = MultiScaleTokenizer(config.tokenizer)
        self.encoder, self.decoder, self.quantizer = tokenizer.encoder, tokenizer.decoder, tokenizer.quantizer
        self.transformer = NextScaleTransformer(config.transformer)
        self.swinir = SwinIR(config.swinir) if config.swinir is not None else None
        self.schedule = tokenizer.default_schedule(config.image_size, config.image_size)
        self.text_folder = text_folder
        self._text_encoder: TextEncoder | None = None
        self._default_text: dict[int, TextCondition] = {}
        self.precision = torch.float32
        """The autocast dtype of SwinIR, the transformer and the decoder (float32: no autocast);
        :meth:`set_precision` sets it with the weights' dtypes."""

    # ------------------------------------------------------------------------------------ protocol
    @property
    def restore_spec(self) -> RestoreSpec:
        """The restore contract: bfloat16 by default, applied per stage as the official inference does
        (:meth:`set_precision`); no edge context, so an LQ of the working size is one pass, as the
        official non-tiled mode makes; one bit-draw stream per tile position; and always a prompt (the
        config's default one without ``--prompt``)."""
        config = self.config
        return RestoreSpec(
            scale=config.scale,
            input_size=config.image_size // config.scale,
            default_dtype="bfloat16",
            default_color_fix=config.color_fix,
            edge_context=0,
            reads_prompts=True,
            sets_precision=True,
            tile_streams=True,
        )

    def set_precision(self, dtype: torch.dtype) -> None:
        """Precision per stage as ``tools/run_varestorer.py``: the tokenizer's encoder (and the LQ's
        quantisation) in float32 with autocast off; SwinIR, the transformer and the decoder under ``dtype``
        autocast, the transformer's weights stored in ``dtype`` (the official ``--bf16 1`` blocks), the
        other stages' weights in float32. ``float32``: every stage in float32 (the parity runs)."""
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"precision must be float32, float16 or bfloat16, got {dtype}")
        self.transformer.to(dtype)
        for module in (self.swinir, self.encoder, self.quantizer, self.decoder):
            if module is not None:
                module.float()
        self.precision = dtype

    def _autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        if self.precision == torch.float32:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.precision)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``torch.compile`` the stages in place (SwinIR, encoder, each transformer block, decoder; the
        state-dict names do not change). The text path, RoPE table and bit draw stay eager."""
        modules: list[nn.Module | None] = [self.swinir, self.encoder, *self.transformer.block_list(), self.decoder]
        for module in modules:
            if module is not None:
                module.compile(*args, **kwargs)

    # ---------------------------------------------------------------------------------------- text
    def encode_prompts(self, prompts: list[str]) -> TextCondition:
        """Prompts -> flan-t5-xl features (the folder's ``flan-t5-xl``), loaded on first use."""
        if self.text_folder is None:
            raise ValueError("no flan-t5-xl folder beside the weights; add it to use a prompt (or omit the prompt)")
        if self._text_encoder is None:
            config = TextEncoderConfig(kind="transformers", path=self.text_folder, max_length=512)
            device, dtype = self.transformer.pos_start.device, self.transformer.pos_start.dtype
            encoder = load_text_encoder(config, device=device, dtype=dtype)
            # Not a submodule: its weights would enter state_dict() and every .to() / set_precision of the model.
            object.__setattr__(self, "_text_encoder", encoder)
        assert self._text_encoder is not None
        return self._text_encoder(prompts)

    def _text_for(self, batch_size: int) -> TextCondition | None:
        """The default prompt's features for a batch, or None (learned "no caption" tokens) without T5."""
        if self.text_folder is None:
            return None
        if batch_size not in self._default_text:
            self._default_text[batch_size] = self.encode_prompts([self.config.prompt] * batch_size)
        return self._default_text[batch_size]

    # ------------------------------------------------------------------------------------- forward
    # The pass as named stages (``varestorer bench`` times each): clean -> encode -> predict -> to_latent -> decode.
    def clean(self, lq_B3hw: Tensor) -> Tensor:
        """LQ in [0, 1] -> bicubic to the working size -> SwinIR (under the autocast): (B, 3, S, S), unclamped."""
        if lq_B3hw.ndim != 4 or lq_B3hw.shape[1] != 3:
            raise ValueError(f"expected LQ images (B, 3, h, w) in [0, 1], got shape {tuple(lq_B3hw.shape)}")
        size = (self.config.image_size, self.config.image_size)
        x = lq_B3hw
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False)
        if self.swinir is None:
            return x
        with self._autocast(x.device):
            return self.swinir(x.to(_dtype_of(self.swinir)))

    def encode(self, x_B3HW: Tensor) -> Tensor:
        """Cleaned image in [0, 1] -> the transformer inputs (B, L - 1 [+ h_K w_K], d): the encoder and the
        LQ's quantisation in the encoder's dtype (float32 unless cast by hand), autocast off."""
        with torch.autocast(x_B3HW.device.type, enabled=False):
            f_BdHW = self.encoder((x_B3HW * 2 - 1).to(_dtype_of(self.encoder)))
            tokens = self.quantizer.quantize(f_BdHW, self.schedule, with_norms=False)
        inputs = tokens.inputs
        if self.config.extra_lq_scale:
            inputs = torch.cat([inputs, tokens.f_hat.flatten(2).transpose(1, 2)], dim=1)
        return inputs

    def lq_to_inputs(self, lq_B3hw: Tensor) -> Tensor:
        """LQ in [0, 1] -> the transformer inputs (B, L - 1 [+ h_K w_K], d) of its token pyramid."""
        return self.encode(self.clean(lq_B3hw))

    def _rope(self, length: int, device: torch.device) -> Tensor:
        """RoPE of the first ``length`` positions of Infinity's 13-scale grid of this aspect ratio."""
        h, w = self.schedule[-1]
        template = INFINITY_TEMPLATES[nearest_template_ratio(h / w)]
        if tuple(template[: len(self.schedule)]) != tuple(self.schedule):
            raise ValueError(f"schedule {self.schedule} is not a prefix of Infinity's template {template}")
        positions = scale_positions(template, rope_extent(self.schedule, "infinity"), device=device)
        if length > positions.shape[0]:
            raise ValueError(f"{length} tokens exceed Infinity's position grid of {positions.shape[0]}")
        cfg = self.transformer.config
        return rope_table(positions[:length], cfg.head_dim, cfg.rope_theta)

    def logits(self, inputs_BLd: Tensor, text: TextCondition | None) -> Tensor:
        """One full-attention pass: (B, L - 1 [+ h_K w_K], d) inputs -> (B, L, d, 2) float32 logits."""
        t = self.transformer
        B = inputs_BLd.shape[0]
        L = sum(h * w for h, w in self.schedule)
        extra = inputs_BLd.shape[1] - (L - 1)
        if extra not in (0, self.schedule[-1][0] * self.schedule[-1][1]):
            raise ValueError(f"inputs have {inputs_BLd.shape[1]} tokens; expected {L - 1} (+ the last scale)")
        device = t.pos_start.device
        if text is not None and text.tokens.device != device:  # a new TextCondition checks its lengths: a sync
            text = text.to(device)
        with self._autocast(device):
            cond = t.encode_condition(text, B)
            sos_B1C = cond.pooled.unsqueeze(1) + t.pos_start
            x_BLC = torch.cat((sos_B1C, t.word_embed(inputs_BLd.to(sos_B1C.dtype))), dim=1)
            levels = scale_levels(self.schedule, device=x_BLC.device)
            if extra:
                levels = torch.cat([levels, levels.new_full((extra,), len(self.schedule))])
            x_BLC = x_BLC + t.lvl_embed(levels)
            x_BLC, _ = t.run_blocks(x_BLC, cond, self._rope(L + extra, x_BLC.device), None)
            return t.logits(x_BLC[:, :L], cond).float()

    def predict(self, inputs_BLd: Tensor, text: TextCondition | None = None) -> Tensor:
        """The one transformer pass (:meth:`logits`) with the default prompt's features when ``text`` is None."""
        return self.logits(inputs_BLd, self._text_for(inputs_BLd.shape[0]) if text is None else text)

    def bits(self, logits_BLd2: Tensor, streams: Sequence[int] | None = None) -> list[Tensor]:
        """Per-scale (B, h*w, d) bits: sampled from softmax(logits) (official) or the likelier value.

        With a ``seed``, batch item ``b`` draws from its own generator, seeded by ``seed`` and
        ``streams[b]`` (default 0 for every item): an item's bits do not depend on the batch it is in,
        and two tiles of one image (the ``Restorer`` passes each tile's index) draw different noise.
        """
        if self.config.sampling == "argmax":
            bits = logits_BLd2.argmax(-1)
        elif self.config.seed is None:
            bits = sample_top_p(logits_BLd2)
        else:
            B = logits_BLd2.shape[0]
            streams = [0] * B if streams is None else list(streams)
            if len(streams) != B:
                raise ValueError(f"{len(streams)} streams for a batch of {B}")
            draws = []
            for b, stream in enumerate(streams):
                generator = torch.Generator(logits_BLd2.device).manual_seed(stream_seed(self.config.seed, stream))
                draws.append(sample_top_p(logits_BLd2[b : b + 1], generator=generator))
            bits = torch.cat(draws)
        return list(bits.split([h * w for h, w in self.schedule], dim=1))

    def to_latent(self, logits_BLd2: Tensor, streams: Sequence[int] | None = None) -> Tensor:
        """Bit logits -> drawn bits -> f_hat (B, d, h_K, w_K) in float32."""
        return self.quantizer.labels_to_f_hat(self.bits(logits_BLd2, streams), self.schedule, self.schedule[-1])

    def decode(self, f_hat_BdHW: Tensor) -> Tensor:
        """f_hat -> the decoder (under the autocast) -> image in [0, 1], float32."""
        with self._autocast(f_hat_BdHW.device):
            x = self.decoder(f_hat_BdHW.to(_dtype_of(self.decoder)))
        return ((x.float() + 1) / 2).clamp(0, 1)

    def forward(
        self, lq_B3hw: Tensor, text: TextCondition | None = None, *, streams: Sequence[int] | None = None
    ) -> Tensor:
        """LQ (B, 3, S/s, S/s) in [0, 1] -> SR (B, 3, S, S) in [0, 1] (the ``OneStepSR`` contract).

        ``streams``: per batch item, the bit draw's stream (a tile's index in its image; default 0)."""
        logits = self.predict(self.encode(self.clean(lq_B3hw)), text)
        return self.decode(self.to_latent(logits, streams))

    # ------------------------------------------------------------------------------------- loading
    @classmethod
    def from_files(
        cls,
        transformer: str | Path,
        tokenizer: str | Path,
        swinir: str | Path | None = None,
        text_encoder: str | Path | None = None,
        *,
        config: OfficialConfig | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> OfficialVARestorer:
        """Build from the official files (any paths): ``varestorer.pth``, ``infinity_vae_d32reg.pth``,
        ``general_swinir_v1.ckpt`` (None: no stage one) and the flan-t5-xl folder (None: no prompts).

        Everything is checked strictly by key names and shapes; weights end up in ``dtype`` on the CPU.
        """
        config = config or OfficialConfig()
        if swinir is None and config.swinir is not None:
            config = replace(config, swinir=None)
        with torch.device("meta"):
            model = cls(config, text_folder=str(text_encoder) if text_encoder is not None else None)
        raw = load_state_dict(transformer, mmap=True)
        state = official_transformer_state_dict(raw, model.transformer, config, dtype, what=str(transformer))
        del raw
        model.transformer.load_state_dict(state, strict=True, assign=True)
        vae = load_infinity_tokenizer(tokenizer, config.tokenizer).float()
        model.encoder, model.decoder, model.quantizer = vae.encoder, vae.decoder, vae.quantizer
        if swinir is not None:
            model.swinir = load_swinir(swinir, dtype=torch.float32)
            if model.swinir.config != config.swinir:
                raise ValueError(f"{swinir}: a SwinIR of shape {model.swinir.config}, expected {config.swinir}")
        _check_materialised(model)
        model.set_precision(dtype)
        return model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16
    ) -> OfficialVARestorer:
        """A release folder: the official files under their names, optionally a ``config.json`` of ours."""
        folder = Path(directory)
        if (folder / CONFIG_NAME).is_file():
            config = read_official_config(read_config(folder))
        elif is_official_folder(folder):
            config = OfficialConfig()
        else:
            raise FileNotFoundError(f"{folder}: no {OfficialConfig().files.transformer} (not an official release)")
        files = config.files
        need = {"transformer": files.transformer, "tokenizer": files.tokenizer, "swinir": files.swinir}
        missing = [name for name in need.values() if name is not None and not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} lacks {', '.join(missing)} (see README: Run the official VARestorer weights)"
            )
        text = config.text_encoder_config(folder)
        if text.kind == "none":
            logger.warning(
                "%s has no %s folder: no prompts; the learned no-caption tokens replace the official empty prompt",
                folder,
                files.text_encoder,
            )
        model = cls.from_files(
            folder / files.transformer,
            folder / files.tokenizer,
            folder / files.swinir if files.swinir is not None else None,
            text.path,
            config=config,
            dtype=dtype,
        )
        return model.to(device)

    @classmethod
    def from_hub(
        cls,
        *,
        config: OfficialConfig | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.bfloat16,
    ) -> OfficialVARestorer:
        """The release from the Hugging Face Hub (:data:`OFFICIAL_HUB_FILES`; cached by ``huggingface_hub``).

        Raises:
            FileNotFoundError: one line naming every file that is neither cached nor downloadable.
        """
        paths: dict[str, Path] = {}
        missing: list[str] = []
        for part, (repo_id, filename) in OFFICIAL_HUB_FILES.items():
            try:
                paths[part] = (
                    hub_file(repo_id, filename) if filename else hub_snapshot(repo_id, allow_patterns=T5_PATTERNS)
                )
            except FileNotFoundError:
                missing.append(f"`hf download {repo_id}{' ' + filename if filename else ''}`")
        if missing:
            raise FileNotFoundError(
                "the official VARestorer files are not in the Hugging Face cache and cannot be downloaded; "
                f"fetch them with {', '.join(missing)}"
            )
        model = cls.from_files(
            paths["transformer"], paths["tokenizer"], paths["swinir"], paths["text_encoder"], config=config, dtype=dtype
        )
        return model.to(device)


def stream_seed(seed: int, stream: int) -> int:
    """The generator seed of one bit-draw stream: distinct for every (seed, stream) with stream < 2**20."""
    return seed * (1 << 20) + stream


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _check_materialised(model: nn.Module) -> None:
    """Every tensor of a model built on the meta device must have been loaded."""
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"not loaded from the official files: {', '.join(left[:8])}")


def read_official(source: Any) -> OfficialVARestorer | None:
    """The family's reader (``varestorer.families``): the release from its Hub id or a release folder of its
    own files (no ``config.json``); None for anything else. ``source`` is a ``families.WeightSource``
    (``name`` as given, ``path`` or None), duck-typed: models do not import the registry."""
    if source.path is None:
        return OfficialVARestorer.from_hub() if source.name == OFFICIAL_HUB_ID else None
    if source.path.is_dir() and is_official_folder(source.path) and not (source.path / CONFIG_NAME).is_file():
        return OfficialVARestorer.from_pretrained(source.path)
    return None


__all__ = [
    "OfficialConfig",
    "OfficialVARestorer",
    "official_key_shapes",
    "official_transformer_state_dict",
    "read_official",
]
