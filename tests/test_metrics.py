"""Fast metric tests that need no downloaded weights: known values, identities, symmetry, bad input."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from varestorer.metrics import adapters, brisque, fidelity, matlab_resize, niqe
from varestorer.metrics.dists import DISTS
from varestorer.metrics.lpips import LPIPS
from varestorer.metrics.registry import METRICS, parse_metrics


def test_y_channel_definition() -> None:
    white, black = np.full((1, 1, 3), 255.0), np.zeros((1, 1, 3))
    assert fidelity.rgb_to_y(white)[0, 0, 0] == pytest.approx(235.0)
    assert fidelity.rgb_to_y(black)[0, 0, 0] == pytest.approx(16.0)
    red = np.array([[[255.0, 0, 0]]])
    assert fidelity.rgb_to_y(red)[0, 0, 0] == pytest.approx(16 + 65.481)


def test_psnr_known_values() -> None:
    gt = np.zeros((16, 16, 3), np.float32)
    pred = np.full((16, 16, 3), 0.1, np.float32)
    assert fidelity.psnr(pred, gt, y_channel=False) == pytest.approx(20.0)
    assert fidelity.psnr(pred, gt) == pytest.approx(10 * math.log10(255**2 / (0.1 * 219) ** 2))
    assert fidelity.psnr(gt, gt) == math.inf
    # a difference only in the border disappears with the crop
    pred = gt.copy()
    pred[:2] = 1.0
    assert fidelity.psnr(pred, gt, crop_border=2) == math.inf
    assert fidelity.psnr(pred, gt, crop_border=1) < 20


def test_ssim_identity_symmetry_and_range(tiny_image) -> None:
    a, b = tiny_image(40, 48, seed=1), tiny_image(40, 48, seed=2)
    assert fidelity.ssim(a, a) == pytest.approx(1.0)
    assert fidelity.ssim(a, b) == pytest.approx(fidelity.ssim(b, a))
    assert -1 <= fidelity.ssim(a, b) < 1
    assert fidelity.ssim(a, b, y_channel=False) < 1


def test_psnr_ssim_match_scikit_image(tiny_image) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    a, b = tiny_image(48, 40, seed=3), tiny_image(48, 40, seed=4)
    ya = fidelity.rgb_to_y(a.astype(np.float64))[..., 0]
    yb = fidelity.rgb_to_y(b.astype(np.float64))[..., 0]
    kw = {"data_range": 255, "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    assert fidelity.ssim(a, b) == pytest.approx(metrics.structural_similarity(ya, yb, **kw), abs=1e-9)
    rgb = metrics.structural_similarity(a.astype(float), b.astype(float), channel_axis=2, **kw)
    assert fidelity.ssim(a, b, y_channel=False) == pytest.approx(rgb, abs=1e-9)
    assert fidelity.psnr(a, b) == pytest.approx(metrics.peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-9)
    assert fidelity.psnr(a, b, y_channel=False) == pytest.approx(metrics.peak_signal_noise_ratio(a, b), abs=1e-9)


def test_pyiqa_protocol_psnr_caps_at_80_db_and_adds_its_epsilon() -> None:
    gt = np.zeros((16, 16, 3), np.float32)
    pred = np.full((16, 16, 3), 0.1, np.float32)
    assert fidelity.psnr(gt, gt, protocol="pyiqa") == pytest.approx(80.0)
    exact = 10 * math.log10(255**2 / (0.1 * 219) ** 2)
    pyiqa = fidelity.psnr(pred, gt, protocol="pyiqa")
    assert pyiqa == pytest.approx(-10 * math.log10((0.1 * 219 / 255) ** 2 + 1e-8), abs=1e-6) and pyiqa < exact


def test_pyiqa_protocol_ssim_rounds_y_and_clips_the_structure_term() -> None:
    # constant colours whose Y differs by 0.26 levels: equal once rounded (as MATLAB's uint8 rgb2ycbcr)
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a.copy()
    b[..., 0] = 101
    assert fidelity.ssim(a, b, protocol="pyiqa") == 1.0
    assert fidelity.ssim(a, b) < 1.0
    # a checkerboard against its inverse: negative covariance; pyiqa clips the structure term to 0
    checker = (np.indices((24, 24)).sum(axis=0) % 2 * 255).astype(np.uint8)
    x = np.repeat(checker[..., None], 3, axis=2)
    assert fidelity.ssim(x, 255 - x) < -0.9
    assert fidelity.ssim(x, 255 - x, protocol="pyiqa") == 0.0
    assert fidelity.ssim(x, 255 - x, y_channel=False, protocol="pyiqa") == 0.0
    with pytest.raises(ValueError, match="protocol"):
        fidelity.ssim(x, x, protocol="matlab")  # type: ignore[arg-type]


def test_reference_scores_parse_pyiqa_logs_and_compare() -> None:
    from varestorer.metrics.reference_scores import compare_scores, parse_pyiqa_log

    text = (
        "17:36:07 - INFO:   inp_imgs: ['preset/results']\n"
        "17:36:18 - INFO: results/Canon_10_x1.png | PSNR: 29.260979; SSIM: 0.892310; LPIPS: 0.319971"
        " | Runtime: 1.1 sec\n"
        "17:36:19 - INFO: results/DSC 1.JPG | PSNR: 1e1; SSIM: .5\n"
        "PSNR: 27.9243; SSIM: 0.7835\n"  # the average line names no image
    )
    scores = parse_pyiqa_log(text)
    assert scores == {
        "Canon_10_x1": {"psnr": 29.260979, "ssim": 0.892310, "lpips": 0.319971, "runtime": 1.1},
        "1": {"psnr": 10.0, "ssim": 0.5},
    }
    ours = {"Canon_10_x1": {"psnr": 29.26, "lpips": 0.32, "dists": 0.2}, "other": {"psnr": 1.0}}
    agreement = compare_scores(ours, scores)
    assert set(agreement) == {"psnr", "lpips"}
    assert agreement["psnr"].count == 1 and agreement["psnr"].max_abs == pytest.approx(0.000979)
    assert agreement["lpips"].mean_reference == pytest.approx(0.319971)


def test_fidelity_bad_input(tiny_image) -> None:
    a = tiny_image(32, 32)
    with pytest.raises(ValueError, match="size mismatch"):
        fidelity.psnr(a, tiny_image(32, 30))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fidelity.psnr(a.astype(np.float32), a.astype(np.float32))  # 0-255 floats
    with pytest.raises(ValueError, match="RGB"):
        fidelity.ssim(a[..., 0], a[..., 0])
    with pytest.raises(ValueError, match="11x11"):
        fidelity.ssim(a, a, crop_border=11)
    with pytest.raises(ValueError, match="crop_border"):
        fidelity.psnr(a, a, crop_border=16)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_properties(net: str) -> None:
    model = LPIPS(net, pretrained=False)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    d = model(x, y)
    assert d.shape == (2,)
    assert torch.allclose(d, model(y, x))
    assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters())
    x.requires_grad_(True)
    model(x, y).sum().backward()  # usable as a training loss
    assert x.grad is not None and x.grad.abs().sum() > 0
    if net == "vgg":
        return  # the [0, 1] path is the same code; checked once (alex) to keep the test fast
    # normalize=True takes [0, 1] inputs and gives the same value
    normalized = LPIPS(net, pretrained=False, normalize=True)
    normalized.load_state_dict(model.state_dict())
    assert torch.allclose(normalized((x.detach() + 1) / 2, (y + 1) / 2), model(x.detach(), y), atol=1e-5)


def test_lpips_dists_bad_input() -> None:
    with pytest.raises(ValueError, match="net"):
        LPIPS("squeeze", pretrained=False)
    model = LPIPS("alex", pretrained=False)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 64, 64), torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="differ"):
        model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 60))
    with pytest.raises(ValueError, match="float"):
        DISTS(pretrained=False)(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 32, 32))


def test_dists_properties() -> None:
    model = DISTS(pretrained=False)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert model(x, x).abs().item() < 1e-5
    assert model(x, y).item() == pytest.approx(model(y, x).item(), abs=1e-6)
    assert 0 < model(x, y).item() < 1


def test_matlab_imresize_preserves_constants_and_ramps() -> None:
    assert np.allclose(matlab_resize.imresize(np.full((20, 14), 7.0), 0.5), 7.0)
    ramp = np.tile(np.arange(32, dtype=np.float64), (8, 1))
    out = matlab_resize.imresize(ramp, 0.5)
    assert out.shape == (4, 16)
    assert np.allclose(out[:, 3:-3], 2 * np.arange(3, 13) + 0.5)  # linear data is reproduced at new centres
    assert np.allclose(matlab_resize.resize_weights(10, 5, 0.5).sum(axis=1), 1.0)


def test_niqe_is_zero_against_its_own_statistics(tiny_image) -> None:
    image = tiny_image(200, 200, seed=5)
    window = np.outer(*[np.exp(-0.5 * (np.arange(-3, 4) / (7 / 6)) ** 2)] * 2)
    window /= window.sum()
    luma = np.round(image.astype(np.float64) @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103]))
    features = niqe.niqe_features(luma, window)
    assert features.shape == (4, 36)
    model = {"mu": features.mean(0), "cov": np.cov(features, rowvar=False), "gaussian_window": window}
    assert niqe.niqe(image, model=model) == pytest.approx(0.0, abs=1e-6)
    model["mu"] = model["mu"] + 1.0
    assert niqe.niqe(image, model=model) > 0
    with pytest.raises(ValueError, match="96x96"):
        niqe.niqe(tiny_image(64, 200), model=model)
    with pytest.raises(ValueError, match="flat"):
        niqe.niqe(np.full((200, 200, 3), 128, np.uint8), model=model)


def test_aggd_fits_recover_a_gaussian() -> None:
    values = np.random.default_rng(0).normal(0, 0.5, 200_000)
    shape, left, right = niqe.aggd_fit(values)
    assert shape == pytest.approx(2.0, abs=0.05) and left == pytest.approx(right, rel=0.02)
    shape, left, right = brisque.aggd_fit(values)
    assert shape == pytest.approx(2.0, abs=0.05) and left == pytest.approx(0.5, rel=0.02)


def test_brisque_features_and_svr(tiny_image) -> None:
    image = tiny_image(64, 80, seed=6)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255  # as brisque() does
    features = brisque.brisque_features(gray)
    assert features.shape == (36,) and np.isfinite(features).all()
    low, high = features - 1, features + 1
    model = {
        "support_vectors": np.zeros((1, 36), np.float32),  # x scales to exactly 0 -> kernel value 1
        "alpha": np.array([42.0]),
        "rho": np.array([2.0]),
        "gamma": np.array([0.05]),
        "feature_min": low.astype(np.float32),
        "feature_max": high.astype(np.float32),
    }
    assert brisque.svr_score(features, model) == pytest.approx(40.0, abs=1e-3)
    assert brisque.brisque(image, model=model) == pytest.approx(40.0, abs=1e-2)
    model["alpha"] = np.array([500.0])
    assert brisque.svr_score(features, model) == 100.0  # clamped
    with pytest.raises(ValueError, match="16x16"):
        brisque.brisque(tiny_image(8, 8), model=model)


def test_metric_registry_and_parsing() -> None:
    assert parse_metrics(None, has_gt=True) == ["psnr", "ssim", "lpips", "dists", "niqe", "brisque"]
    assert parse_metrics(None, has_gt=False) == ["niqe", "brisque"]
    assert parse_metrics("PSNR, niqe,psnr", has_gt=True) == ["psnr", "niqe"]
    with pytest.raises(ValueError, match="ground truth"):
        parse_metrics("psnr", has_gt=False)
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metrics("psnr,foo", has_gt=True)
    assert METRICS["lpips"].higher_is_better is False and METRICS["psnr"].needs_gt
    assert not METRICS["niqe"].needs_gt and METRICS["musiq"].higher_is_better


def test_optional_adapter_message(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyiqa(name, *args, **kwargs):
        if name == "pyiqa":
            raise ImportError("No module named 'pyiqa'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyiqa)
    monkeypatch.delitem(__import__("sys").modules, "pyiqa", raising=False)
    with pytest.raises(adapters.MissingOptionalMetricError, match="pip install pyiqa"):
        adapters.pyiqa_metric("musiq")
    with pytest.raises(ValueError, match="unknown pyiqa adapter"):
        adapters.pyiqa_metric("maniqa")
