"""Degradation settings: typed frozen dataclasses and the published presets.

Presets (one literal dict, :data:`DEGRADATION_PRESETS`):

- ``realesrgan``: Real-ESRGAN x4plus second-order pipeline (``train_realesrgan_x4plus.yml``), with USM
  sharpening of the GT before the first blur.
- ``mild``: the milder set used by VARSR and SeeSR-online (StableSR's noise/resize/JPEG ranges,
  Real-ESRGAN's blur ranges, stage-2 blur w.p. 0.5, no USM).
- ``stablesr``: StableSR's ``v2-finetune_text_T_512`` set (also narrower blur and beta ranges, USM).
- ``bicubic``: a plain antialiased bicubic downscale.

Custom pipelines are read from TOML/JSON with :func:`load_degradation_config` (unknown keys are errors);
a file may start from a preset with ``base = "mild"`` and override tables/keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from varestorer.config import config_from_dict, config_to_dict, read_config_tables

ResizeModeName = Literal["area", "bilinear", "bicubic"]


@dataclass(frozen=True)
class BlurConfig:
    """One random blur kernel per sample."""

    probability: float = 1.0  # chance that the blur is applied at all
    # weights of iso, aniso, generalized_iso, generalized_aniso, plateau_iso, plateau_aniso
    kernel_probs: tuple[float, float, float, float, float, float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sigma_range: tuple[float, float] = (0.2, 3.0)  # px, for both axes
    generalized_beta_range: tuple[float, float] = (0.5, 4.0)
    plateau_beta_range: tuple[float, float] = (1.0, 2.0)
    sinc_prob: float = 0.1  # a sinc kernel instead of the Gaussian family
    size_range: tuple[int, int] = (7, 21)  # odd sizes, uniform


@dataclass(frozen=True)
class ResizeConfig:
    """Random up/down/keep resize with a random interpolation mode (one draw per batch)."""

    probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    scale_range: tuple[float, float] = (0.15, 1.5)  # up: U(1, hi); down: U(lo, 1)
    modes: tuple[ResizeModeName, ...] = ("area", "bilinear", "bicubic")


@dataclass(frozen=True)
class NoiseConfig:
    """Gaussian or Poisson noise per sample, colour or gray (channel-shared)."""

    gaussian_prob: float = 0.5  # otherwise Poisson
    gaussian_sigma_range: tuple[float, float] = (1.0, 30.0)  # on the 0-255 scale
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_prob: float = 0.4


@dataclass(frozen=True)
class StageConfig:
    """Blur -> resize -> noise -> JPEG (stage 1) or the final JPEG quality (stage 2)."""

    blur: BlurConfig = field(default_factory=BlurConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg_quality_range: tuple[int, int] = (30, 95)  # integer qualities, inclusive


@dataclass(frozen=True)
class DegradationConfig:
    """A full degradation pipeline; ``kind="bicubic"`` ignores every field except ``scale``."""

    kind: Literal["second_order", "bicubic"] = "second_order"
    scale: int = 4  # GT side / LQ side
    sharpen: bool = True  # synthesize the LQ from the USM-sharpened GT (the returned GT stays unsharpened)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    second_order_prob: float = 1.0  # chance that stage 2's blur/resize/noise run (one draw per batch)
    final_sinc_prob: float = 0.8
    final_sinc_size_range: tuple[int, int] = (7, 21)
    final_resize_modes: tuple[ResizeModeName, ...] = ("area", "bilinear", "bicubic")

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        for name, stage in (("stage1", self.stage1), ("stage2", self.stage2)):
            low, high = stage.jpeg_quality_range
            if not 1 <= low <= high <= 100:
                raise ValueError(f"{name}.jpeg_quality_range must satisfy 1 <= lo <= hi <= 100, got {(low, high)}")
            for size in (*stage.blur.size_range, *self.final_sinc_size_range):
                if size < 1 or size % 2 == 0:
                    raise ValueError(f"kernel sizes must be positive odd numbers, got {size}")
            if not stage.resize.modes:
                raise ValueError(f"{name}.resize.modes must not be empty")


_REALESRGAN = DegradationConfig(
    stage2=StageConfig(
        blur=BlurConfig(probability=0.8, sigma_range=(0.2, 1.5)),
        resize=ResizeConfig(probs=(0.3, 0.4, 0.3), scale_range=(0.3, 1.2)),
        noise=NoiseConfig(gaussian_sigma_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5)),
        jpeg_quality_range=(30, 95),
    ),
)

_MILD = DegradationConfig(
    sharpen=False,
    stage1=StageConfig(
        resize=ResizeConfig(scale_range=(0.3, 1.5)),
        noise=NoiseConfig(gaussian_sigma_range=(1.0, 15.0), poisson_scale_range=(0.05, 2.0)),
        jpeg_quality_range=(60, 95),
    ),
    stage2=StageConfig(
        blur=BlurConfig(probability=0.5, sigma_range=(0.2, 1.5)),
        resize=ResizeConfig(probs=(0.3, 0.4, 0.3), scale_range=(0.6, 1.2)),
        noise=NoiseConfig(gaussian_sigma_range=(1.0, 12.0), poisson_scale_range=(0.05, 1.0)),
        jpeg_quality_range=(60, 100),
    ),
)

_STABLESR_BLUR: dict[str, Any] = {"generalized_beta_range": (0.5, 2.0), "plateau_beta_range": (1.0, 1.5)}
_STABLESR = dataclasses.replace(
    _MILD,
    sharpen=True,
    stage1=dataclasses.replace(_MILD.stage1, blur=BlurConfig(sigma_range=(0.2, 1.5), **_STABLESR_BLUR)),
    stage2=dataclasses.replace(
        _MILD.stage2, blur=BlurConfig(probability=0.5, sigma_range=(0.2, 1.0), **_STABLESR_BLUR)
    ),
)

DEGRADATION_PRESETS: dict[str, DegradationConfig] = {
    "realesrgan": _REALESRGAN,
    "mild": _MILD,
    "stablesr": _STABLESR,
    "bicubic": DegradationConfig(kind="bicubic", sharpen=False),
}


def _merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if key not in base:
            raise ValueError(f"{where}: unknown key {key!r}; valid keys: {', '.join(base)}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = _merge(base[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def degradation_config_from_dict(data: dict[str, Any], *, where: str = "DegradationConfig") -> DegradationConfig:
    """Build a config from a dict; ``base`` (a preset name) supplies every key not given."""
    data = dict(data)
    base = data.pop("base", None)
    if base is not None:
        if base not in DEGRADATION_PRESETS:
            raise ValueError(f"{where}: unknown base preset {base!r}; choose from {', '.join(DEGRADATION_PRESETS)}")
        data = _merge(config_to_dict(DEGRADATION_PRESETS[base]), data, where)
    return config_from_dict(DegradationConfig, data, where=where)


def load_degradation_config(path: str | Path, *, section: str | None = None) -> DegradationConfig:
    """Read a pipeline from a ``.toml``/``.json`` file (optionally one top-level table ``section``)."""
    path = Path(path)
    data = read_config_tables(path, section=section, what="degradation config")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table/object")
    return degradation_config_from_dict(data, where=path.name)


def resolve_degradation_config(preset_or_path: str | Path) -> DegradationConfig:
    """A preset name or a path to a ``.toml``/``.json`` pipeline file."""
    if str(preset_or_path) in DEGRADATION_PRESETS:
        return DEGRADATION_PRESETS[str(preset_or_path)]
    path = Path(preset_or_path)
    if path.suffix in (".toml", ".json"):
        return load_degradation_config(path)
    raise ValueError(
        f"unknown degradation preset {str(preset_or_path)!r}; choose from {', '.join(DEGRADATION_PRESETS)}"
    )
