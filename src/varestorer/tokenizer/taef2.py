"""``TAEF2Tokenizer``: the pretrained TAEF2 autoencoder (MIT) under a multi-scale bitwise quantiser.

    x (B, 3, H, W) in [-1, 1] --(x+1)/2--> TAEF2 encoder --> raw latent (B, 32, H/8, W/8)
        --(z - shift) @ whiten--> f --GainedBitwiseQuantizer--> labels per scale, f_hat
    f_hat --f_hat @ unwhiten + shift--> TAEF2 decoder --> 2y - 1 --> x_rec (B, 3, H, W) in [-1, 1]

Same interface as :class:`~varestorer.tokenizer.autoencoder.MultiScaleTokenizer` (``encode``,
``tokenize``, ``decode``, ``stride``, ``token_dim``, ``default_schedule``, ``labels_to_image``,
``quantizer``; ``encoder`` and ``decoder`` map images <-> the normalised latent on their own, so a
student that borrows them needs nothing else). The latent transform (``shift`` and a d x d
``whiten`` matrix with its inverse, buffers in both halves) and the gains come from data
(:meth:`TAEF2Tokenizer.calibrate`): PCA whitening by default, so that each sign bit quantises a
decorrelated unit-variance component (docs/tokenizer.md measures it against per-channel scaling).
``load_taef2`` reads the two released ``.pth`` files strictly (``weights_only``, sha256 checked);
their keys are those of ``encoder.net`` and ``decoder.net`` exactly. Weights derived from them ship with the MIT notice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from varestorer.checkpoint import PretrainedMixin, check_state_dict, load_state_dict
from varestorer.config import lookup
from varestorer.tokenizer.base import MultiScaleTokenizerBase
from varestorer.tokenizer.gained import GainedBitwiseQuantizer, octaves_below
from varestorer.tokenizer.quantizer import resize_latent
from varestorer.tokenizer.scales import Schedule, schedule_for_grid
from varestorer.tokenizer.taef2_fused import (
    decoder_tail_fusable,
    encoder_head_fusable,
    fused_decoder_tail,
    fused_encoder_head,
)
from varestorer.tokenizer.taef2_modules import TAEF2_STRIDE, taef2_decoder, taef2_encoder

TAEF2_FILES: dict[str, tuple[str, str]] = {
    "encoder": ("taef2_encoder.pth", "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6"),
    "decoder": ("taef2_decoder.pth", "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5"),
}
"""Half -> (released file name, its sha256) from ``madebyollin/taesd``."""

FULL_RESOLUTION_BLOCKS: dict[str, int] = {"encoder": 1, "decoder": 18}
"""Half -> index (in ``net``) of its Block at image resolution, left out by ``full_resolution_blocks=False``."""


@dataclass(frozen=True)
class TAEF2Config:
    """Shape of a :class:`TAEF2Tokenizer`; the defaults are the released TAEF2 and the measured quantiser."""

    token_dim: int = 32
    """Latent channels = bits per token (TAEF2: 32)."""
    channels: int = 64
    """Width of every conv block (TAEF2: 64)."""
    upsample_mode: Literal["bilinear", "bicubic"] = "bicubic"
    """How a scale's codes are brought to the full grid (docs/tokenizer.md compares the two)."""
    input_interpolation: Literal["bilinear", "area"] = "bilinear"
    """How f_hat is resized to the next scale for the transformer's teacher-forcing inputs."""
    num_gain_knots: int = 17
    """Learned code gains at 0, spacing, ... octaves below the final grid (17 x 0.5: up to 8 octaves)."""
    gain_knot_spacing: float = 0.5
    latent_transform: Literal["pca", "channel", "none"] = "pca"
    """What :meth:`TAEF2Tokenizer.calibrate` fits: PCA whitening of the 32 channels, per-channel mean/std,
    or nothing (raw latent). The fitted matrices are buffers, so a saved tokenizer keeps them."""
    full_resolution_blocks: bool = True
    """False: the lite variant. The two 3-conv blocks at image resolution (encoder index 1, decoder
    index 18; 29 of the 66 GFLOP at 256 px) are identities, every other key keeps its released name
    (:data:`FULL_RESOLUTION_BLOCKS`); trained to share a full tokenizer's token space (docs/tokenizer.md)."""

    def __post_init__(self) -> None:
        if self.token_dim < 1 or self.channels < 4 or self.channels % 4:
            raise ValueError("token_dim must be positive and channels a positive multiple of 4")
        if self.latent_transform not in ("pca", "channel", "none"):
            raise ValueError(f"latent_transform must be pca, channel or none, got {self.latent_transform!r}")

    @property
    def stride(self) -> int:
        return TAEF2_STRIDE


TAEF2_PRESETS: dict[str, TAEF2Config] = {
    # Unit tests: the real structure at 8 channels (~22k parameters).
    "taef2-tiny": TAEF2Config(token_dim=8, channels=8),
    "taef2-tiny-lite": TAEF2Config(token_dim=8, channels=8, full_resolution_blocks=False),
    # The released TAEF2 (2.68M parameters), under the 10-scale schedule at 256 px.
    "taef2": TAEF2Config(),
    # Without the full-resolution blocks (2.46M parameters, 37 GFLOP at 256 px instead of 66).
    "taef2-lite": TAEF2Config(full_resolution_blocks=False),
}
"""Named TAEF2 tokenizer shapes."""


def mix_channels(x_BdHW: Tensor, matrix_dd: Tensor) -> Tensor:
    """Channels times a matrix: out[:, j] = sum_i x[:, i] * matrix[i, j]."""
    return torch.einsum("bihw,ij->bjhw", x_BdHW, matrix_dd.to(x_BdHW.dtype))


class LatentNormalised(nn.Module):
    """A TAEF2 half plus the latent transform it converts with: ``shift`` (d,), ``whiten`` and ``unwhiten`` (d, d)."""

    latent_shift: Tensor
    latent_whiten: Tensor
    latent_unwhiten: Tensor

    def __init__(self, net: nn.Sequential, token_dim: int) -> None:
        super().__init__()
        # channels_last weights and activations: oneDNN's fast path on CPU (docs/tokenizer.md, Speed); the
        # weights keep this layout through load_state_dict, and saving writes them contiguous.
        self.net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # real kwarg
        self.register_buffer("latent_shift", torch.zeros(token_dim))
        self.register_buffer("latent_whiten", torch.eye(token_dim))
        self.register_buffer("latent_unwhiten", torch.eye(token_dim))

    def _shift(self, like: Tensor) -> Tensor:
        return self.latent_shift.to(like.dtype).view(1, -1, 1, 1)


class TAEF2Encoder(LatentNormalised):
    """Images in [-1, 1] -> normalised latent ``(z - shift) @ whiten``."""

    def forward(self, x_B3HW: Tensor) -> Tensor:
        x = ((x_B3HW + 1) * 0.5).contiguous(memory_format=torch.channels_last)
        if torch.is_grad_enabled() or x.shape[-1] % 2 or x.shape[-2] % 2 or not encoder_head_fusable(self.net):
            z = self.net(x)
        else:  # inference without the full-resolution Block: convs 0 and 2 as one (taef2_fused.py, exact)
            head = fused_encoder_head(x, self.net[0], self.net[2])  # type: ignore[arg-type]  # checked Conv2d
            z = self.net[3:](head.contiguous(memory_format=torch.channels_last))
        return mix_channels(z - self._shift(z), self.latent_whiten).contiguous()


class TAEF2Decoder(LatentNormalised):
    """Normalised latent -> images in about [-1, 1] (not clamped)."""

    def forward(self, f_BdHW: Tensor) -> Tensor:
        z = (mix_channels(f_BdHW, self.latent_unwhiten) + self._shift(f_BdHW)).contiguous(
            memory_format=torch.channels_last
        )
        if torch.is_grad_enabled() or not decoder_tail_fusable(self.net):
            out = self.net(z)
        else:  # inference without the full-resolution Block: the tail at half resolution (taef2_fused.py, exact)
            out = fused_decoder_tail(self.net[:-4](z), self.net[-3], self.net[-1])  # type: ignore[arg-type]
        return (out * 2 - 1).contiguous()


class TAEF2Tokenizer(PretrainedMixin, MultiScaleTokenizerBase):
    """TAEF2 encoder/decoder around a :class:`GainedBitwiseQuantizer` (the tokenizer interface)."""

    config_class = TAEF2Config
    encoder: TAEF2Encoder
    decoder: TAEF2Decoder
    quantizer: GainedBitwiseQuantizer

    def __init__(self, config: TAEF2Config | None = None) -> None:
        super().__init__()
        self.config = config = config or TAEF2Config()
        full = config.full_resolution_blocks
        self.encoder = TAEF2Encoder(
            taef2_encoder(config.token_dim, config.channels, full_resolution_block=full), config.token_dim
        )
        self.decoder = TAEF2Decoder(
            taef2_decoder(config.token_dim, config.channels, full_resolution_block=full), config.token_dim
        )
        self.quantizer = GainedBitwiseQuantizer(
            config.token_dim,
            num_knots=config.num_gain_knots,
            knot_spacing=config.gain_knot_spacing,
            upsample_mode=config.upsample_mode,
            input_interpolation=config.input_interpolation,
        )

    @classmethod
    def from_preset(cls, name: str) -> TAEF2Tokenizer:
        return cls(lookup(TAEF2_PRESETS, name, "TAEF2 preset"))

    @property
    def stride(self) -> int:
        return TAEF2_STRIDE

    @property
    def token_dim(self) -> int:
        return self.config.token_dim

    @torch.no_grad()
    def calibrate(
        self, x_B3HW: Tensor, schedule: Schedule | None = None, *, transform: str | None = None
    ) -> list[float]:
        """Set the latent transform and the gains from images ``x`` (all the same size); returns per-scale gains.

        ``transform`` (default ``config.latent_transform``): ``pca``: shift = mean, whiten = V diag(1/sqrt(l))
        from the eigenvectors V and eigenvalues l of the channel covariance, so f has uncorrelated
        unit-variance channels; ``channel``: whiten = diag(1/std); ``none``: identity. Gains: scale by
        scale, the least-squares length g of the sign codes against the residual,
        g = <r, up(s)> / <up(s), up(s)> over all of ``x``, placed on the knots by octave.
        """
        self._check_image(x_B3HW)
        transform = transform or self.config.latent_transform
        token_dim = self.token_dim
        raw = self.encoder.net((x_B3HW.float() + 1) * 0.5).double()
        shift = raw.mean(dim=(0, 2, 3)) if transform != "none" else torch.zeros(token_dim, dtype=torch.float64)
        centred = (raw - shift.view(1, -1, 1, 1)).permute(0, 2, 3, 1).reshape(-1, token_dim)
        if transform == "pca":
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / centred.shape[0])
            whiten = eigenvectors.flip(1) / eigenvalues.flip(0).clamp_min(1e-8).sqrt()  # largest component first
        elif transform == "channel":
            whiten = torch.diag(1.0 / centred.std(dim=0).clamp_min(1e-4))
        elif transform == "none":
            whiten = torch.eye(token_dim, dtype=torch.float64)
        else:
            raise ValueError(f"transform must be pca, channel or none, got {transform!r}")
        unwhiten = torch.linalg.inv(whiten)
        for half in (self.encoder, self.decoder):
            half.latent_shift.copy_(shift.float())
            half.latent_whiten.copy_(whiten.float())
            half.latent_unwhiten.copy_(unwhiten.float())
        f = mix_channels((raw - shift.view(1, -1, 1, 1)).float(), whiten.float())
        grid_hw = (f.shape[2], f.shape[3])
        schedule = schedule or schedule_for_grid(*grid_hw)
        rest, gains, octaves = f, [], []
        for hw in schedule:
            signs = torch.where(resize_latent(rest, hw, "area") > 0, 1.0, -1.0)
            up = resize_latent(signs, grid_hw, self.config.upsample_mode)
            gain = float((rest * up).sum() / up.pow(2).sum().clamp_min(1e-12))
            rest = rest - gain * up
            gains.append(gain)
            octaves.append(octaves_below(hw, grid_hw))
        self.quantizer.set_gains_from_scales(octaves, gains)
        return gains


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_taef2(
    directory: str | Path,
    config: TAEF2Config | None = None,
    *,
    check_sha256: bool = True,
) -> TAEF2Tokenizer:
    """A :class:`TAEF2Tokenizer` with the released weights of ``directory`` (``taef2_{encoder,decoder}.pth``).

    Strict: every tensor of ``encoder.net`` / ``decoder.net`` must be in the file under its own key
    with its shape, nothing else; read with ``weights_only=True``; the sha256 of each file must be the
    released one unless ``check_sha256=False`` (for re-saved or synthetic files). Latent statistics
    and gains are left at 0 / 1 / 1: call :meth:`TAEF2Tokenizer.calibrate` next.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: wrong checksum, unreadable file, or missing/unexpected/mis-shaped tensors.
    """
    directory = Path(directory)
    model = TAEF2Tokenizer(config or TAEF2Config())
    for half, (name, sha256) in TAEF2_FILES.items():
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"TAEF2 {half} weights not found: {path}")
        if check_sha256 and (actual := file_sha256(path)) != sha256:
            raise ValueError(f"{path}: sha256 {actual[:16]}... is not the released TAEF2 {half} ({sha256[:16]}...)")
        state = load_state_dict(path)
        net: nn.Module = getattr(model, half).net
        state = _without_full_resolution_block(state, half, model.config, what=str(path))
        check_state_dict(net, state, what=str(path))
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def _without_full_resolution_block(
    state: dict[str, Tensor], half: str, config: TAEF2Config, *, prefix: str = "", what: str
) -> dict[str, Tensor]:
    """``state`` less the keys of ``half``'s full-resolution Block when ``config`` leaves it out.

    Raises:
        ValueError: the Block is left out but ``state`` has none of its keys (it is not a full TAEF2 half).
    """
    if config.full_resolution_blocks:
        return state
    block = f"{prefix}{FULL_RESOLUTION_BLOCKS[half]}."
    dropped = [k for k in state if k.startswith(block)]
    if not dropped:
        raise ValueError(f"{what}: no {block}* tensors to leave out; is it already a lite TAEF2 {half}?")
    return {k: v for k, v in state.items() if not k.startswith(block)}


def dropped_keys(config: TAEF2Config) -> list[str]:
    """The keys of a full :class:`TAEF2Tokenizer` state dict that a tokenizer of ``config`` has not (sorted)."""
    full = TAEF2Tokenizer(replace(config, full_resolution_blocks=True)).state_dict()
    return sorted(set(full) - set(TAEF2Tokenizer(config).state_dict()))


def derive_taef2(source: TAEF2Tokenizer, config: TAEF2Config) -> tuple[TAEF2Tokenizer, list[str]]:
    """A tokenizer of ``config`` holding ``source``'s weights, buffers and gains, and the keys it left out.

    Strict: every tensor of the new tokenizer comes from ``source`` under the same key and shape; the
    only keys of ``source`` not used are those of the blocks ``config`` leaves out (returned, sorted),
    e.g. the lite variant of ``default-tokenizer`` (``full_resolution_blocks=False``) drops
    ``encoder.net.1.conv.{0,2,4}.{weight,bias}`` and ``decoder.net.18.conv.{0,2,4}.{weight,bias}``.

    Raises:
        ValueError: the shapes differ (another token_dim or width) or other keys are missing or extra.
    """
    state = source.state_dict()
    for half in FULL_RESOLUTION_BLOCKS:
        if source.config.full_resolution_blocks:
            state = _without_full_resolution_block(state, half, config, prefix=f"{half}.net.", what="source")
        elif config.full_resolution_blocks:
            raise ValueError("a lite TAEF2 tokenizer has no full-resolution blocks to give a full one")
    model = TAEF2Tokenizer(config)
    check_state_dict(model, state, what="source tokenizer")
    model.load_state_dict(state, strict=True)
    dropped = sorted(set(source.state_dict()) - set(state))
    return model.to(next(source.parameters()).dtype).eval(), dropped


__all__ = [
    "LatentNormalised",
    "FULL_RESOLUTION_BLOCKS",
    "TAEF2_FILES",
    "TAEF2_PRESETS",
    "TAEF2Config",
    "TAEF2Decoder",
    "TAEF2Encoder",
    "TAEF2Tokenizer",
    "derive_taef2",
    "dropped_keys",
    "file_sha256",
    "load_taef2",
]
