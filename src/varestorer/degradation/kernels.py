"""Blur kernels of the Real-ESRGAN pipeline: (an)isotropic, generalized and plateau Gaussians, and sinc.

All builders are pure functions of their parameters and return float32 ``(k, k)`` tensors that sum
to 1, optionally zero-padded to a larger odd size. Coordinates: ``x`` runs along columns (width),
``y`` along rows (height); ``angle`` (radians) rotates the ``sigma_x`` axis counter-clockwise from
the x axis in that frame. ``random_kernel`` draws a :class:`KernelSpec` from a generator, and
:func:`build_kernel` turns a spec back into a tensor, so manifests can store specs, not pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch

KernelType = Literal[
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso", "sinc", "pulse"
]
# Order of ``BlurConfig.kernel_probs`` (the sinc choice is drawn separately with ``sinc_prob``).
GAUSSIAN_FAMILY: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    axis = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return xx, yy


def _mahalanobis(size: int, sigma_x: float, sigma_y: float | None, angle: float) -> torch.Tensor:
    """(x, y) Sigma^-1 (x, y)^T on a ``size`` grid, with Sigma = R diag(sx^2, sy^2) R^T (sy = sx when None)."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be > 0, got {sigma_x}, {sigma_y}")
    xx, yy = _grid(size)
    cos, sin = math.cos(angle), math.sin(angle)
    u = cos * xx + sin * yy  # coordinate along the rotated sigma_x axis
    v = -sin * xx + cos * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _mahalanobis_power(size: int, sigma_x: float, sigma_y: float | None, angle: float, beta: float) -> torch.Tensor:
    """``d^beta`` with ``d`` the squared Mahalanobis distance: the generalized and plateau shapes' argument."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return _mahalanobis(size, sigma_x, sigma_y, angle) ** beta


def _finish(kernel: torch.Tensor, pad_to: int | None) -> torch.Tensor:
    kernel = kernel / kernel.sum()
    if pad_to is not None and pad_to > kernel.shape[0]:
        if pad_to % 2 == 0:
            raise ValueError(f"pad_to must be odd, got {pad_to}")
        pad = (pad_to - kernel.shape[0]) // 2
        kernel = torch.nn.functional.pad(kernel, (pad, pad, pad, pad))
    return kernel.to(torch.float32)


def gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, angle: float = 0.0, *, pad_to: int | None = None
) -> torch.Tensor:
    """Bivariate Gaussian ``exp(-d/2)``; isotropic when ``sigma_y`` is ``None``. Returns ``(k, k)``."""
    return _finish(torch.exp(-0.5 * _mahalanobis(size, sigma_x, sigma_y, angle)), pad_to)


def generalized_gaussian_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    angle: float = 0.0,
    beta: float = 1.0,
    *,
    pad_to: int | None = None,
) -> torch.Tensor:
    """Generalized Gaussian ``exp(-0.5 d^beta)`` with ``d`` the squared Mahalanobis distance (beta = 1: Gaussian)."""
    return _finish(torch.exp(-0.5 * _mahalanobis_power(size, sigma_x, sigma_y, angle, beta)), pad_to)


def plateau_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    angle: float = 0.0,
    beta: float = 1.0,
    *,
    pad_to: int | None = None,
) -> torch.Tensor:
    """Plateau-shaped kernel ``1 / (1 + d^beta)`` (flat top, heavy tails)."""
    return _finish(1.0 / (_mahalanobis_power(size, sigma_x, sigma_y, angle, beta) + 1.0), pad_to)


def sinc_kernel(size: int, cutoff: float, *, pad_to: int | None = None) -> torch.Tensor:
    """Circular low-pass (2-D sinc / Airy) kernel with cutoff ``cutoff`` in radians per pixel (0, pi]."""
    if not 0 < cutoff <= math.pi + 1e-9:
        raise ValueError(f"sinc cutoff must be in (0, pi], got {cutoff}")
    xx, yy = _grid(size)
    radius = torch.sqrt(xx**2 + yy**2)
    safe = torch.where(radius == 0, torch.ones_like(radius), radius)
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    kernel = torch.where(radius == 0, torch.full_like(radius, cutoff**2 / (4 * math.pi)), kernel)
    return _finish(kernel, pad_to)


def pulse_kernel(size: int = 1, *, pad_to: int | None = None) -> torch.Tensor:
    """The identity kernel (a single 1 at the center)."""
    _grid(size)
    kernel = torch.zeros(size, size, dtype=torch.float64)
    kernel[size // 2, size // 2] = 1.0
    return _finish(kernel, pad_to)


@dataclass(frozen=True)
class KernelSpec:
    """Everything needed to rebuild one drawn kernel (JSON-ready via :meth:`to_dict`)."""

    type: KernelType
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    angle: float = 0.0
    beta: float = 1.0
    cutoff: float = 0.0

    def to_dict(self) -> dict[str, float | int | str]:
        """Only the fields that matter for this kernel type."""
        data = asdict(self)
        keep = {"type", "size"}
        if self.type == "sinc":
            keep.add("cutoff")
        elif self.type != "pulse":
            keep.add("sigma_x")
            if self.type.endswith("aniso"):
                keep |= {"sigma_y", "angle"}
            if self.type.startswith(("generalized", "plateau")):
                keep.add("beta")
        return {k: v for k, v in data.items() if k in keep}


def build_kernel(spec: KernelSpec, *, pad_to: int | None = None) -> torch.Tensor:
    """The ``(k, k)`` float32 kernel of a spec (isotropic types ignore ``sigma_y`` and ``angle``)."""
    isotropic = not spec.type.endswith("aniso")
    sigma_y = None if isotropic else spec.sigma_y
    angle = 0.0 if isotropic else spec.angle
    if spec.type in ("iso", "aniso"):
        return gaussian_kernel(spec.size, spec.sigma_x, sigma_y, angle, pad_to=pad_to)
    if spec.type.startswith("generalized"):
        return generalized_gaussian_kernel(spec.size, spec.sigma_x, sigma_y, angle, spec.beta, pad_to=pad_to)
    if spec.type.startswith("plateau"):
        return plateau_kernel(spec.size, spec.sigma_x, sigma_y, angle, spec.beta, pad_to=pad_to)
    if spec.type == "sinc":
        return sinc_kernel(spec.size, spec.cutoff, pad_to=pad_to)
    if spec.type == "pulse":
        return pulse_kernel(spec.size, pad_to=pad_to)
    raise ValueError(f"unknown kernel type {spec.type!r}")


# --- random draws (every draw goes through the explicit generator) ---------------------------------


def uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    """One float uniform in ``[low, high)`` drawn from ``generator``."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64).item())


def choice(probabilities: tuple[float, ...], generator: torch.Generator | None) -> int:
    """Index ``i`` with probability ``probabilities[i] / sum`` (one uniform draw)."""
    total = sum(probabilities)
    if total <= 0 or min(probabilities) < 0:
        raise ValueError(f"probabilities must be >= 0 with a positive sum, got {probabilities}")
    draw = uniform(0.0, total, generator)
    cumulative = 0.0
    for index, p in enumerate(probabilities):
        cumulative += p
        if draw < cumulative:
            return index
    return max(i for i, p in enumerate(probabilities) if p > 0)


def odd_size(size_range: tuple[int, int], generator: torch.Generator | None) -> int:
    """An odd kernel size uniform over ``{lo, lo + 2, ..., hi}``."""
    sizes = list(range(size_range[0], size_range[1] + 1, 2))
    if not sizes or size_range[0] % 2 == 0:
        raise ValueError(f"kernel size range must start at an odd number, got {size_range}")
    return sizes[int(torch.randint(len(sizes), (1,), generator=generator).item())]


def _beta(beta_range: tuple[float, float], generator: torch.Generator | None) -> float:
    # Half the draws below 1 and half above (as Real-ESRGAN does), so both shapes are frequent.
    low, high = beta_range
    if uniform(0.0, 1.0, generator) < 0.5 and low < 1.0:
        return uniform(low, min(1.0, high), generator)
    return uniform(max(1.0, low), high, generator) if high > 1.0 else uniform(low, high, generator)


def random_kernel(
    *,
    kernel_probs: tuple[float, ...],
    sigma_range: tuple[float, float],
    generalized_beta_range: tuple[float, float],
    plateau_beta_range: tuple[float, float],
    sinc_prob: float,
    size_range: tuple[int, int],
    generator: torch.Generator | None,
) -> KernelSpec:
    """Draw one blur kernel spec the Real-ESRGAN way.

    A size from ``size_range`` (odd); with ``sinc_prob`` a sinc with cutoff U[pi/3, pi] (size < 13)
    or U[pi/5, pi]; otherwise a type from :data:`GAUSSIAN_FAMILY` weighted by ``kernel_probs``,
    sigmas U[sigma_range], angle U[-pi, pi], beta per family.
    """
    size = odd_size(size_range, generator)
    if uniform(0.0, 1.0, generator) < sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return KernelSpec("sinc", size, cutoff=uniform(low, math.pi, generator))
    kind = GAUSSIAN_FAMILY[choice(kernel_probs, generator)]
    sigma_x = uniform(*sigma_range, generator)
    sigma_y, angle, beta = sigma_x, 0.0, 1.0
    if kind.endswith("aniso"):
        sigma_y = uniform(*sigma_range, generator)
        angle = uniform(-math.pi, math.pi, generator)
    if kind.startswith("generalized"):
        beta = _beta(generalized_beta_range, generator)
    elif kind.startswith("plateau"):
        beta = _beta(plateau_beta_range, generator)
    return KernelSpec(kind, size, sigma_x=sigma_x, sigma_y=sigma_y, angle=angle, beta=beta)  # type: ignore[arg-type]
