"""Degradation kernels, ops, presets and the seeded two-stage pipeline."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from varestorer.degradation import ops
from varestorer.degradation.config import (
    DEGRADATION_PRESETS,
    BlurConfig,
    DegradationConfig,
    NoiseConfig,
    ResizeConfig,
    StageConfig,
    degradation_config_from_dict,
    load_degradation_config,
    resolve_degradation_config,
)
from varestorer.degradation.kernels import (
    GAUSSIAN_FAMILY,
    KernelSpec,
    build_kernel,
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    random_kernel,
    sinc_kernel,
)
from varestorer.degradation.pipeline import DegradationPipeline, apply_params, degrade, draw_params


def _moments(kernel: torch.Tensor) -> tuple[float, float]:
    """Variance of the kernel along x (columns) and y (rows)."""
    size = kernel.shape[0]
    axis = torch.arange(size, dtype=torch.float64) - size // 2
    k = kernel.double()
    return float((k.sum(0) * axis**2).sum()), float((k.sum(1) * axis**2).sum())


def test_kernels_sum_to_one_with_requested_shape() -> None:
    builders = [
        gaussian_kernel(7, 1.5),
        gaussian_kernel(9, 2.0, 0.5, 0.3),
        generalized_gaussian_kernel(11, 2.0, 1.0, 1.0, beta=0.7),
        plateau_kernel(13, 2.0, 1.0, -0.5, beta=1.5),
        sinc_kernel(15, math.pi / 3),
        sinc_kernel(21, math.pi / 5, pad_to=21),
    ]
    for kernel, size in zip(builders, (7, 9, 11, 13, 15, 21)):
        assert kernel.shape == (size, size) and kernel.dtype == torch.float32
        assert abs(float(kernel.sum()) - 1.0) < 1e-5
    padded = gaussian_kernel(7, 1.0, pad_to=21)
    assert padded.shape == (21, 21) and float(padded[:7].abs().sum()) == 0.0
    assert abs(float(padded.sum()) - 1.0) < 1e-5
    assert torch.allclose(generalized_gaussian_kernel(9, 1.3, beta=1.0), gaussian_kernel(9, 1.3))
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(8, 1.0)
    with pytest.raises(ValueError, match="cutoff"):
        sinc_kernel(7, 4.0)
    # plateau 1 / (1 + d^beta): d = 0, 1, 2 at the center, edges and corners of a 3x3 grid with sigma 1
    plateau = plateau_kernel(3, 1.0, beta=1.0)
    expected = torch.tensor([[1 / 3, 1 / 2, 1 / 3], [1 / 2, 1.0, 1 / 2], [1 / 3, 1 / 2, 1 / 3]])
    assert torch.allclose(plateau / plateau[1, 1], expected)
    for builder in (generalized_gaussian_kernel, plateau_kernel):
        with pytest.raises(ValueError, match="beta"):
            builder(5, 1.0, beta=0.0)
        with pytest.raises(ValueError, match="sigmas"):
            builder(5, 1.0, -1.0, beta=1.0)


def test_anisotropic_orientation() -> None:
    var_x, var_y = _moments(gaussian_kernel(21, 3.0, 0.6, 0.0))
    assert var_x > 5 * var_y  # sigma_x runs along the columns
    var_x, var_y = _moments(gaussian_kernel(21, 3.0, 0.6, math.pi / 2))
    assert var_y > 5 * var_x
    iso = gaussian_kernel(21, 2.0)
    assert torch.allclose(iso, iso.T) and abs(_moments(iso)[0] - 4.0) < 0.1
    diagonal = gaussian_kernel(21, 3.0, 0.6, math.pi / 4)
    assert diagonal[10 + 5, 10 + 5] > 10 * diagonal[10 + 5, 10 - 5]  # spread along x = y
    wide, narrow = sinc_kernel(21, math.pi / 5), sinc_kernel(21, math.pi)
    assert wide[10, 10] < narrow[10, 10]  # lower cutoff = more blur


def test_random_kernel_is_seeded_and_covers_types() -> None:
    def draw(seed: int) -> KernelSpec:
        return random_kernel(
            kernel_probs=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
            sigma_range=(0.2, 3.0),
            generalized_beta_range=(0.5, 4.0),
            plateau_beta_range=(1.0, 2.0),
            sinc_prob=0.1,
            size_range=(7, 21),
            generator=torch.Generator().manual_seed(seed),
        )

    assert draw(5) == draw(5)
    specs = [draw(s) for s in range(300)]
    types = {s.type for s in specs}
    assert types >= {"iso", "aniso", "sinc", "generalized_iso", "plateau_iso"}
    assert {s.size for s in specs} == set(range(7, 22, 2))
    for spec in specs[:40]:
        kernel = build_kernel(spec, pad_to=21)
        assert kernel.shape == (21, 21) and abs(float(kernel.sum()) - 1) < 1e-5
        assert json.loads(json.dumps(spec.to_dict()))["type"] == spec.type
    assert set(GAUSSIAN_FAMILY) < types | set(GAUSSIAN_FAMILY)


def test_filter2d_backends_agree_and_handle_tiny_images() -> None:
    x = torch.rand(2, 3, 23, 19)
    kernels = torch.stack([gaussian_kernel(21, 2.0, 1.0, 0.4), sinc_kernel(21, 1.0)])
    reference = ops.filter2d(x, kernels, backend="torch")
    assert torch.allclose(ops.filter2d(x, kernels, backend="opencv"), reference, atol=1e-5)
    flat = torch.full((1, 3, 2, 1), 0.3)
    for backend in ("torch", "opencv"):
        assert torch.allclose(ops.filter2d(flat, kernels[:1], backend=backend), flat, atol=1e-6)
    pulse = build_kernel(KernelSpec("pulse", 1), pad_to=9)[None]
    assert torch.equal(ops.filter2d(x[:1], pulse), x[:1])


def test_usm_sharpen_and_gaussian_blur() -> None:
    flat = torch.full((1, 3, 64, 64), 0.4)
    assert torch.allclose(ops.usm_sharpen(flat), flat, atol=1e-6)
    edge = torch.zeros(1, 3, 64, 64)
    edge[..., 32:] = 0.8
    sharp = ops.usm_sharpen(edge)
    assert sharp[..., 33].mean() > 0.8 and sharp[..., 30].mean() == 0.0  # overshoot only above 0
    blurred_cv = ops.gaussian_blur(edge, 51)
    blurred_torch = ops.gaussian_blur(edge.requires_grad_(False).double(), 51).float()  # torch path
    assert torch.allclose(blurred_cv, blurred_torch, atol=1e-5)


def test_gaussian_noise_level_on_flat_image() -> None:
    flat = torch.full((2, 3, 128, 128), 0.5)
    noisy = ops.gaussian_noise(flat, [5.0, 20.0], [False, True], torch.Generator().manual_seed(0))
    std = (noisy - flat).std(dim=(1, 2, 3)) * 255
    assert abs(float(std[0]) - 5.0) < 0.3 and abs(float(std[1]) - 20.0) < 1.0
    assert torch.equal(noisy[1, 0], noisy[1, 2])  # gray noise: one field for all channels
    assert not torch.equal(noisy[0, 0], noisy[0, 2])


def test_poisson_noise_level_on_flat_image() -> None:
    flat = torch.full((1, 3, 128, 128), 100 / 255)
    noisy = ops.poisson_noise(flat, [0.2], [False], torch.Generator().manual_seed(0))
    # one distinct level -> vals = 1: noise = scale * (Poisson(x) - x), std = scale * sqrt(x)
    expected = 0.2 * math.sqrt(100 / 255)
    measured = float((noisy - flat).std())
    assert abs(measured - expected) / expected < 0.05


def _blockiness(image_B3HW: torch.Tensor) -> float:
    """Mean jump across 8-px block borders divided by the mean jump inside blocks."""
    diff = (image_B3HW[..., 1:] - image_B3HW[..., :-1]).abs().mean(dim=(0, 1, 2))
    at_border = diff[7::8].mean()
    inside = torch.cat([diff[i::8] for i in range(7)]).mean()
    return float(at_border / inside.clamp_min(1e-6))


def test_jpeg_is_real_and_quality_changes_blockiness() -> None:
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    smooth = torch.stack([torch.sin(xx / 9 + c) * torch.cos(yy / 11 - c) for c in range(3)]) * 0.4 + 0.5
    image = ((smooth * 255).round() / 255)[None]
    low, high = ops.jpeg(image, [10]), ops.jpeg(image, [95])
    assert (low * 255 - (low * 255).round()).abs().max() < 1e-4  # decoded 8-bit levels
    assert _blockiness(low) > 1.5 * _blockiness(high)
    assert (low - image).abs().mean() > 2 * (high - image).abs().mean()
    with pytest.raises(ValueError, match="quality"):
        ops.jpeg(image, [0])


def _noise_only(sigma_range: tuple[float, float]) -> DegradationConfig:
    quiet = StageConfig(
        blur=BlurConfig(probability=0.0),
        resize=ResizeConfig(probs=(0.0, 0.0, 1.0)),
        noise=NoiseConfig(gaussian_prob=1.0, gaussian_sigma_range=sigma_range, gray_prob=1.0),
        jpeg_quality_range=(100, 100),
    )
    return DegradationConfig(
        scale=1, sharpen=False, stage1=quiet, stage2=quiet, second_order_prob=0.0, final_sinc_prob=0.0
    )


def test_pipeline_noise_within_drawn_range() -> None:
    config = _noise_only((8.0, 16.0))
    flat = torch.full((3, 96, 96), 0.5)
    for seed in range(3):
        lq, params = degrade(flat, config, torch.Generator().manual_seed(seed))
        sigma = params["stage1"]["noise"]["sigma"]
        assert 8.0 <= sigma <= 16.0 and params["stage1"]["noise"]["gray"] is True
        measured = float((lq - flat).std() * 255)
        assert abs(measured - sigma) < 0.12 * sigma, (measured, sigma)


@pytest.mark.parametrize("preset", ["realesrgan", "mild", "stablesr", "bicubic"])
def test_presets_sizes_and_determinism(preset: str, tiny_image) -> None:
    hq = torch.from_numpy(tiny_image(64, 48)).permute(2, 0, 1).float() / 255
    lq, params = degrade(hq, preset, torch.Generator().manual_seed(7))
    assert lq.shape == (3, 16, 12) and float(lq.min()) >= 0 and float(lq.max()) <= 1
    assert torch.equal((lq * 255).round(), lq * 255)  # 8-bit levels
    again, params_again = degrade(hq, preset, torch.Generator().manual_seed(7))
    assert torch.equal(lq, again) and params == params_again
    json.dumps(params)  # manifest-ready
    pipeline = DegradationPipeline.from_preset(preset)
    batch_lq, batch_params = pipeline(hq[None], torch.Generator().manual_seed(7))
    assert torch.equal(batch_lq[0], lq) and batch_params[0] == params  # same definition, batch of one


def test_batched_path_shares_size_draws_and_varies_per_sample(tiny_image) -> None:
    hq = torch.stack([torch.from_numpy(tiny_image(64, 64, seed=s)).permute(2, 0, 1).float() / 255 for s in range(4)])
    pipeline = DegradationPipeline(DEGRADATION_PRESETS["realesrgan"])
    lq, params = pipeline(hq, torch.Generator().manual_seed(3))
    assert lq.shape == (4, 3, 16, 16) and len(params) == 4
    assert len({json.dumps(p["stage1"]["resize"]) for p in params}) == 1
    assert len({json.dumps(p["stage1"]["blur"]) for p in params}) > 1
    lq2, _ = pipeline(hq, torch.Generator().manual_seed(3))
    assert torch.equal(lq, lq2)
    lq3, _ = pipeline(hq, torch.Generator().manual_seed(4))
    assert not torch.equal(lq, lq3)


def test_params_record_everything_that_was_applied(tiny_image) -> None:
    hq = torch.from_numpy(tiny_image(64, 64)).permute(2, 0, 1)[None].float() / 255
    config = DEGRADATION_PRESETS["realesrgan"]
    generator = torch.Generator().manual_seed(11)
    params = draw_params(config, 1, generator)
    state = generator.get_state()
    lq = apply_params(hq, params, generator)
    replay = torch.Generator()
    replay.set_state(state)  # noise fields come from the generator; everything else from the record
    assert torch.equal(apply_params(hq, json.loads(json.dumps(params)), replay), lq)
    changed = json.loads(json.dumps(params))
    changed[0]["final"]["jpeg_quality"] = 5 if params[0]["final"]["jpeg_quality"] > 50 else 95
    replay.set_state(state)
    assert not torch.equal(apply_params(hq, changed, replay), lq)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        degrade(torch.rand(1, 16, 16), "mild")
    with pytest.raises(ValueError, match="multiple of the scale"):
        degrade(torch.rand(3, 18, 16), "mild")
    with pytest.raises(ValueError, match="unknown degradation preset"):
        degrade(torch.rand(3, 16, 16), "nope")
    for preset in ("realesrgan", "mild"):  # tiny: 1-px intermediate images, 1x1 LQ
        lq, _ = degrade(torch.rand(3, 4, 4), preset, torch.Generator().manual_seed(0))
        assert lq.shape == (3, 1, 1)


def test_config_files_and_unknown_keys(tmp_path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text('base = "mild"\nscale = 2\n[stage1.noise]\ngray_prob = 0.0\n', encoding="utf-8")
    config = load_degradation_config(path)
    assert config.scale == 2 and config.stage1.noise.gray_prob == 0.0
    assert config.stage2 == DEGRADATION_PRESETS["mild"].stage2
    assert resolve_degradation_config(path) == config
    full = tmp_path / "full.json"
    full.write_text(json.dumps(dataclasses.asdict(DEGRADATION_PRESETS["realesrgan"])), encoding="utf-8")
    assert load_degradation_config(full) == DEGRADATION_PRESETS["realesrgan"]
    with pytest.raises(ValueError, match="unknown key"):
        degradation_config_from_dict({"base": "mild", "stage1": {"noize": {}}})
    with pytest.raises(ValueError, match="unknown key"):
        degradation_config_from_dict({"scael": 4})
    with pytest.raises(ValueError, match="jpeg_quality_range"):
        degradation_config_from_dict({"stage1": {"jpeg_quality_range": [0, 90]}})
    with pytest.raises(ValueError, match="unknown degradation preset"):
        resolve_degradation_config("strong")
    sectioned = tmp_path / "recipe.toml"
    sectioned.write_text('[degradation]\nbase = "mild"\nscale = 2\n[other]\nx = 1\n', encoding="utf-8")
    assert load_degradation_config(sectioned, section="degradation").scale == 2
    with pytest.raises(ValueError, match=r"recipe.toml: no \[train\] section"):
        load_degradation_config(sectioned, section="train")
    with pytest.raises(FileNotFoundError, match="degradation config not found"):
        load_degradation_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("scale = [", encoding="utf-8")
    (tmp_path / "pipeline.yaml").write_text("scale: 2", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.toml: "):
        load_degradation_config(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="pipeline.yaml: unsupported config format '.yaml'"):
        load_degradation_config(tmp_path / "pipeline.yaml")
    assert np.isclose(DEGRADATION_PRESETS["realesrgan"].stage2.blur.probability, 0.8)


def test_torch_backend_matches_opencv_backend(tiny_image) -> None:
    """float64 input takes the pure-torch path (as CUDA tensors do); float32 on CPU uses OpenCV."""
    hq = torch.from_numpy(tiny_image(64, 64)).permute(2, 0, 1).float() / 255
    for seed in range(3):
        lq32, params32 = degrade(hq, "realesrgan", torch.Generator().manual_seed(seed))
        lq64, params64 = degrade(hq.double(), "realesrgan", torch.Generator().manual_seed(seed))
        assert params32 == params64
        # JPEG rounding can flip a few 8-bit levels; the images must agree closely.
        assert float((lq32.double() - lq64).abs().mean()) < 2 / 255


@pytest.mark.gpu
def test_batched_pipeline_on_cuda(tiny_image) -> None:
    hq = torch.from_numpy(tiny_image(64, 64)).permute(2, 0, 1).float() / 255
    batch = torch.stack([hq, hq.flip(-1)]).cuda()
    lq, params = DegradationPipeline.from_preset("realesrgan")(batch, torch.Generator().manual_seed(0))
    assert lq.is_cuda and lq.shape == (2, 3, 16, 16) and len(params) == 2
    cpu_lq, _ = DegradationPipeline.from_preset("realesrgan")(batch.cpu(), torch.Generator().manual_seed(0))
    assert float((lq.cpu() - cpu_lq).abs().mean()) < 2 / 255


def test_the_camera_recipe_is_mild_with_less_noise() -> None:
    """recipes/degradation_camera.toml (a DRealSR-like LQ): parses from its base, and a flat grey GT comes out
    with far less noise than ``mild`` gives it over the same seeds."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "degradation_camera.toml"
    camera = resolve_degradation_config(path)
    assert (
        camera.scale == 4 and not camera.sharpen and camera.stage1.resize == DEGRADATION_PRESETS["mild"].stage1.resize
    )
    flat = torch.full((3, 64, 64), 0.5)

    def noise(config) -> float:
        stds = [degrade(flat, config, torch.Generator().manual_seed(seed))[0].std().item() for seed in range(8)]
        return sum(stds) / len(stds)

    assert noise(camera) < 0.5 * noise(DEGRADATION_PRESETS["mild"])
