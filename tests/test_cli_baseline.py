"""``varestorer baseline``: interpolation and peer networks through the shared batch runner."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from test_ncnn import write_srvgg_ncnn
from varestorer.cli.baseline import resize_array
from varestorer.cli.main import main
from varestorer.foreign.peers import build_peer
from varestorer.io.images import read_image, write_image


def test_bicubic_and_lanczos_keep_mode_and_depth(tmp_path, tiny_image, capsys) -> None:
    rgb = tiny_image(10, 7)
    write_image(tmp_path / "in" / "a.png", rgb)
    write_image(tmp_path / "in" / "b.png", (rgb.astype(np.uint16) * 257 + 1).astype(np.uint16))
    for method in ("bicubic", "lanczos"):
        assert main(["baseline", str(tmp_path / "in"), "-o", str(tmp_path / method), "--method", method]) == 0
        assert read_image(tmp_path / method / "a.png").shape == (40, 28, 3)
        assert read_image(tmp_path / method / "b.png").dtype == np.uint16
    expected = np.asarray(Image.fromarray(rgb).resize((28, 40), Image.Resampling.BICUBIC)).astype(int)
    assert np.abs(read_image(tmp_path / "bicubic" / "a.png").astype(int) - expected).max() <= 1  # PIL bicubic
    assert resize_array(rgb, 0.5, "lanczos").shape == (5, 4, 3)
    assert "bicubic 2, skipped 0 (exist), failed 0" in capsys.readouterr().out


def test_realesr_general_from_ncnn_weights(tmp_path, tiny_image) -> None:
    model = build_peer("realesr-general-x4v3").eval()
    param, _ = write_srvgg_ncnn(model, tmp_path / "general")
    write_image(tmp_path / "in" / "a.png", tiny_image(6, 5))
    args = ["baseline", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--method", "realesr-general-x4v3"]
    assert main([*args, "--weights", str(param), "--scale", "3", "--tile", "4", "--tile-overlap", "2"]) == 0
    assert read_image(tmp_path / "out" / "a.png").shape == (18, 15, 3)


def test_missing_weights_are_one_line_errors(tmp_path, tiny_image, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VARESTORER_CACHE", str(tmp_path / "empty-cache"))  # as before `assets fetch`
    write_image(tmp_path / "a.png", tiny_image(6, 5))
    base = ["baseline", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    assert main([*base, "--method", "realesr-general-x4v3", "--weights", str(tmp_path / "none.pth")]) == 2
    assert "none.pth" in capsys.readouterr().err
    assert main([*base, "--method", "realesrgan-x4plus"]) == 2
    assert "realesrgan-x4plus" in capsys.readouterr().err
    torch.save(build_peer("precleaner-1x").state_dict(), tmp_path / "wrong.pth")
    assert main([*base, "--method", "realesr-general-x4v3", "--weights", str(tmp_path / "wrong.pth")]) == 2
    assert "does not match" in capsys.readouterr().err


def test_interpolation_names_the_network_options_it_ignores(tmp_path, tiny_image, capsys) -> None:
    write_image(tmp_path / "a.png", tiny_image(6, 5))
    base = ["baseline", str(tmp_path / "a.png"), "--method", "bicubic"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "o"), "--device", "cuda", "--tile", "32"]) == 0
    err = capsys.readouterr().err
    assert "--device, --tile do not apply to bicubic" in err and "--weights" not in err
    assert read_image(tmp_path / "o" / "a.png").shape == (24, 20, 3)  # still resized, on the CPU
