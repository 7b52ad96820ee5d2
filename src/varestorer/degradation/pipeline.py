"""The second-order degradation pipeline (Real-ESRGAN order) with two execution paths, one definition.

Order for ``kind="second_order"`` on a GT ``(B, 3, H, W)`` with ``H, W`` multiples of ``scale``:

0. optional USM sharpening of the GT (the LQ is synthesized from the sharpened copy);
1. stage 1: blur (kernel 1) -> random resize -> Gaussian/Poisson noise -> JPEG;
2. stage 2 (w.p. ``second_order_prob``): blur (w.p. ``stage2.blur.probability``) -> random resize to
   ``s * (H/scale, W/scale)`` -> noise;
3. final, in random order (0.5 each): resize to ``(H/scale, W/scale)`` -> sinc -> JPEG, or
   JPEG -> resize -> sinc (the sinc is the identity w.p. ``1 - final_sinc_prob``);
4. clamp and round to 8-bit levels.

:func:`draw_params` is the single place where parameters are drawn; :func:`apply_params` executes them
on a batch. Resize factors/modes, whether stage 2 runs and the final order are drawn once per batch
(every sample of a batch must keep one size, as in Real-ESRGAN); kernels, noise and JPEG qualities
per sample. ``degrade`` (one image, e.g. in data-loader workers) is the batch-of-one case of the same
code. The same image, config and generator seed give the same LQ bit for bit on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from varestorer.config import lookup
from varestorer.degradation import ops
from varestorer.degradation.config import (
    DEGRADATION_PRESETS,
    DegradationConfig,
    NoiseConfig,
    ResizeConfig,
    StageConfig,
)
from varestorer.degradation.kernels import KernelSpec, build_kernel, choice, odd_size, random_kernel, uniform

Params = dict[str, Any]  # JSON-ready record of one sample's draws


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Integer uniform in ``[low, high]`` (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _draw_resize(config: ResizeConfig, generator: torch.Generator | None) -> dict[str, Any]:
    direction = ("up", "down", "keep")[choice(config.probs, generator)]
    low, high = config.scale_range
    if direction == "up":
        scale = uniform(1.0, high, generator)
    elif direction == "down":
        scale = uniform(low, 1.0, generator)
    else:
        scale = 1.0
    mode = config.modes[int(torch.randint(len(config.modes), (1,), generator=generator).item())]
    return {"scale": scale, "mode": mode}


def _draw_noise(config: NoiseConfig, generator: torch.Generator | None) -> dict[str, Any]:
    if uniform(0.0, 1.0, generator) < config.gaussian_prob:
        noise: dict[str, Any] = {"type": "gaussian", "sigma": uniform(*config.gaussian_sigma_range, generator)}
    else:
        noise = {"type": "poisson", "scale": uniform(*config.poisson_scale_range, generator)}
    noise["gray"] = uniform(0.0, 1.0, generator) < config.gray_prob
    return noise


def _draw_kernel(stage: StageConfig, generator: torch.Generator | None) -> KernelSpec:
    blur = stage.blur
    return random_kernel(
        kernel_probs=blur.kernel_probs,
        sigma_range=blur.sigma_range,
        generalized_beta_range=blur.generalized_beta_range,
        plateau_beta_range=blur.plateau_beta_range,
        sinc_prob=blur.sinc_prob,
        size_range=blur.size_range,
        generator=generator,
    )


def draw_params(config: DegradationConfig, batch_size: int, generator: torch.Generator | None = None) -> list[Params]:
    """Draw the parameters of ``batch_size`` samples: batch-shared draws first, then per sample.

    Returns one JSON-ready dict per sample (batch-shared values repeated in each); kernels appear as
    :meth:`KernelSpec.to_dict` dicts, ``None`` where a blur is skipped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if config.kind == "bicubic":
        return [{"kind": "bicubic", "scale": config.scale} for _ in range(batch_size)]
    resize1 = _draw_resize(config.stage1.resize, generator)
    second_order = uniform(0.0, 1.0, generator) < config.second_order_prob
    resize2 = _draw_resize(config.stage2.resize, generator)
    order = "resize_sinc_jpeg" if uniform(0.0, 1.0, generator) < 0.5 else "jpeg_resize_sinc"
    modes = config.final_resize_modes
    final_mode = modes[int(torch.randint(len(modes), (1,), generator=generator).item())]
    samples = []
    for _ in range(batch_size):
        kernel1 = (
            _draw_kernel(config.stage1, generator)
            if uniform(0, 1, generator) < config.stage1.blur.probability
            else None
        )
        noise1 = _draw_noise(config.stage1.noise, generator)
        jpeg1 = _randint(*config.stage1.jpeg_quality_range, generator)
        kernel2 = (
            _draw_kernel(config.stage2, generator)
            if uniform(0, 1, generator) < config.stage2.blur.probability
            else None
        )
        noise2 = _draw_noise(config.stage2.noise, generator)
        sinc = None
        if uniform(0.0, 1.0, generator) < config.final_sinc_prob:
            size = odd_size(config.final_sinc_size_range, generator)
            sinc = KernelSpec("sinc", size, cutoff=uniform(torch.pi / 3, torch.pi, generator))
        jpeg2 = _randint(*config.stage2.jpeg_quality_range, generator)
        samples.append(
            {
                "kind": "second_order",
                "scale": config.scale,
                "sharpen": config.sharpen,
                "stage1": {
                    "blur": kernel1.to_dict() if kernel1 else None,
                    "resize": dict(resize1),
                    "noise": noise1,
                    "jpeg_quality": jpeg1,
                },
                "second_order": second_order,
                "stage2": {
                    "blur": kernel2.to_dict() if kernel2 and second_order else None,
                    "resize": dict(resize2) if second_order else None,
                    "noise": noise2 if second_order else None,
                },
                "final": {
                    "order": order,
                    "resize_mode": final_mode,
                    "sinc": sinc.to_dict() if sinc else None,
                    "jpeg_quality": jpeg2,
                },
            }
        )
    return samples


def _blur(x_BCHW: torch.Tensor, specs: list[dict[str, Any] | None]) -> torch.Tensor:
    """Per-sample kernels (``None`` = identity) padded to the batch's largest size; skipped if all None."""
    if all(spec is None for spec in specs):
        return x_BCHW
    size = max(spec["size"] for spec in specs if spec is not None)
    kernels = [
        build_kernel(KernelSpec(**spec), pad_to=size) if spec else build_kernel(KernelSpec("pulse", 1), pad_to=size)
        for spec in specs
    ]
    return ops.filter2d(x_BCHW, torch.stack(kernels))


def _noise(x_BCHW: torch.Tensor, noises: list[dict[str, Any]], generator: torch.Generator | None) -> torch.Tensor:
    out = []
    for i, noise in enumerate(noises):
        sample = x_BCHW[i : i + 1]
        if noise["type"] == "gaussian":
            out.append(ops.gaussian_noise(sample, [noise["sigma"]], [noise["gray"]], generator))
        else:
            out.append(ops.poisson_noise(sample, [noise["scale"]], [noise["gray"]], generator))
    return torch.cat(out)


def _check_hq(hq_B3HW: torch.Tensor, scale: int) -> None:
    if hq_B3HW.ndim != 4 or hq_B3HW.shape[1] != 3 or not hq_B3HW.is_floating_point():
        raise ValueError(f"expected a float (B, 3, H, W) batch in [0, 1], got {tuple(hq_B3HW.shape)} {hq_B3HW.dtype}")
    height, width = hq_B3HW.shape[2:]
    if height % scale or width % scale:
        raise ValueError(f"GT size {width}x{height} is not a multiple of the scale {scale}")


def apply_params(hq_B3HW: torch.Tensor, params: list[Params], generator: torch.Generator | None = None) -> torch.Tensor:
    """Execute drawn ``params`` on a GT batch in ``[0, 1]``; noise fields come from ``generator``.

    Returns:
        LQ ``(B, 3, H/scale, W/scale)`` float in ``[0, 1]``, on 8-bit levels.
    """
    scale = params[0]["scale"]
    _check_hq(hq_B3HW, scale)
    if len(params) != hq_B3HW.shape[0]:
        raise ValueError(f"got {len(params)} parameter sets for a batch of {hq_B3HW.shape[0]}")
    height, width = hq_B3HW.shape[2:]
    lq_hw = (height // scale, width // scale)
    if params[0]["kind"] == "bicubic":
        out = F.interpolate(hq_B3HW, size=lq_hw, mode="bicubic", align_corners=False, antialias=True)
        return (out.clamp(0, 1) * 255).round() / 255
    first = params[0]
    out = ops.usm_sharpen(hq_B3HW) if first["sharpen"] else hq_B3HW
    # Stage 1
    out = _blur(out, [p["stage1"]["blur"] for p in params])
    resize1 = first["stage1"]["resize"]
    out = ops.resize(out, ops.scaled_size(height, width, resize1["scale"]), resize1["mode"])
    out = _noise(out, [p["stage1"]["noise"] for p in params], generator)
    out = ops.jpeg(out.clamp(0, 1), [p["stage1"]["jpeg_quality"] for p in params])
    # Stage 2
    if first["second_order"]:
        out = _blur(out, [p["stage2"]["blur"] for p in params])
        resize2 = first["stage2"]["resize"]
        out = ops.resize(out, ops.scaled_size(*lq_hw, resize2["scale"]), resize2["mode"])
        out = _noise(out, [p["stage2"]["noise"] for p in params], generator)
    # Final resize + sinc and JPEG, in the drawn order
    final = first["final"]
    sincs = [p["final"]["sinc"] for p in params]
    qualities = [p["final"]["jpeg_quality"] for p in params]
    if final["order"] == "resize_sinc_jpeg":
        out = _blur(ops.resize(out, lq_hw, final["resize_mode"]), sincs)
        out = ops.jpeg(out.clamp(0, 1), qualities)
    else:
        out = ops.jpeg(out.clamp(0, 1), qualities)
        out = _blur(ops.resize(out, lq_hw, final["resize_mode"]), sincs)
    return (out.clamp(0, 1) * 255).round() / 255


def degrade(
    hq_3HW: torch.Tensor, config: DegradationConfig | str, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, Params]:
    """Degrade one GT image ``(3, H, W)`` in ``[0, 1]`` (H, W multiples of the scale).

    Args:
        config: a :class:`DegradationConfig` or a preset name.
        generator: every random draw goes through it (``None``: torch's global generator).

    Returns:
        ``(lq (3, H/scale, W/scale) in [0, 1], params)`` where ``params`` records every drawn value.
    """
    if isinstance(config, str):
        config = lookup(DEGRADATION_PRESETS, config, "degradation preset")
    if hq_3HW.ndim != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(hq_3HW.shape)}")
    params = draw_params(config, 1, generator)
    return apply_params(hq_3HW.unsqueeze(0), params, generator)[0], params[0]


@dataclass
class DegradationPipeline:
    """Batched degradation for training loops: ``lq, params = pipeline(hq_B3HW, generator)``.

    Works on CPU or GPU tensors (the generator stays on the CPU; JPEG coding runs on the CPU).
    """

    config: DegradationConfig

    @classmethod
    def from_preset(cls, name: str) -> DegradationPipeline:
        return cls(lookup(DEGRADATION_PRESETS, name, "degradation preset"))

    @property
    def scale(self) -> int:
        return self.config.scale

    def __call__(
        self, hq_B3HW: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list[Params]]:
        """GT ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(lq (B, 3, H/scale, W/scale), per-sample params)``."""
        _check_hq(hq_B3HW, self.config.scale)
        with torch.no_grad():
            params = draw_params(self.config, hq_B3HW.shape[0], generator)
            return apply_params(hq_B3HW, params, generator), params
