"""``varestorer degrade``: folder layout, manifest, determinism, crops, bad files, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from varestorer.cli.main import main


@pytest.fixture
def sources(tmp_path, tiny_image):
    folder = tmp_path / "src"
    folder.mkdir()
    rgb = tiny_image(40, 44)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 90, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(folder / "deep16.png")
    Image.fromarray(rgb[:2, :3]).save(folder / "tiny.png")
    return folder


def _read(path):
    return np.asarray(Image.open(path))


def test_degrade_writes_pairs_and_manifest(tmp_path, sources, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["degrade", str(sources), "-o", str(out), "--preset", "realesrgan", "--crop", "32", "--seed", "3"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["images"]) == ["deep16", "gray", "rgb", "rgba", "tiny"]
    assert manifest["failed"] == {} and manifest["config"]["scale"] == 4 and manifest["seed"] == 3
    for name, entry in manifest["images"].items():
        assert _read(out / "gt" / f"{name}.png").shape == (32, 32, 3)
        assert _read(out / "lq" / f"{name}.png").shape == (8, 8, 3)
        params = entry["params"]
        assert isinstance(entry["seed"], int) and params["kind"] == "second_order" and params["sharpen"] is True
        assert 30 <= params["stage1"]["jpeg_quality"] <= 95 and 30 <= params["final"]["jpeg_quality"] <= 95
        assert params["final"]["order"] in ("resize_sinc_jpeg", "jpeg_resize_sinc")
    assert manifest["images"]["tiny"]["crop"]["padded"] is True
    assert manifest["images"]["rgb"]["crop"]["padded"] is False
    gray = _read(out / "gt" / "gray.png")
    assert np.array_equal(gray[..., 0], gray[..., 2])
    # Determinism: same sources, preset and seed -> byte-identical LQ; another seed -> different.
    assert (
        main(
            [
                "degrade",
                str(sources),
                "-o",
                str(tmp_path / "again"),
                "--preset",
                "realesrgan",
                "--crop",
                "32",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert (tmp_path / "again" / "lq" / "rgb.png").read_bytes() == (out / "lq" / "rgb.png").read_bytes()
    assert (
        main(
            [
                "degrade",
                str(sources),
                "-o",
                str(tmp_path / "other"),
                "--preset",
                "realesrgan",
                "--crop",
                "32",
                "--seed",
                "4",
            ]
        )
        == 0
    )
    assert not np.array_equal(_read(tmp_path / "other" / "lq" / "rgb.png"), _read(out / "lq" / "rgb.png"))


def test_crop_none_random_resize_back_and_bad_files(tmp_path, sources, capsys) -> None:
    (sources / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    out = tmp_path / "out"
    rc = main(["degrade", str(sources), "-o", str(out), "--preset", "bicubic", "--crop", "none", "--resize-back"])
    assert rc == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["failed"]) == {str(sources / "corrupt.jpg"), str(sources / "tiny.png")}
    assert "smaller than the scale" in manifest["failed"][str(sources / "tiny.png")]
    assert _read(out / "gt" / "rgb.png").shape == (40, 44, 3)
    assert _read(out / "lq" / "rgb.png").shape == (40, 44, 3)  # resized back
    assert manifest["images"]["rgb"]["params"] == {"kind": "bicubic", "scale": 4}
    assert "2 file(s) failed" in capsys.readouterr().out
    rc = main(
        [
            "degrade",
            str(sources / "rgb.png"),
            "-o",
            str(tmp_path / "r"),
            "--crop",
            "16",
            "--crop-mode",
            "random",
            "--scale",
            "2",
        ]
    )
    assert rc == 0
    entry = json.loads((tmp_path / "r" / "manifest.json").read_text())["images"]["rgb"]
    assert entry["lq_size"] == [8, 8] and entry["crop"]["size"] == [16, 16]


def test_refusals_and_custom_config(tmp_path, sources, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["degrade", str(sources / "rgb.png"), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert main(["degrade", str(sources / "rgb.png"), "-o", str(out), "--crop", "30"]) == 2
    assert "multiple of the scale" in capsys.readouterr().err
    config = tmp_path / "pipe.toml"
    config.write_text('base = "mild"\n[stage1]\njpeg_quality_range = [70, 70]\n', encoding="utf-8")
    rc = main(
        ["degrade", str(sources / "rgb.png"), "-o", str(out), "--preset", str(config), "--crop", "32", "--overwrite"]
    )
    assert rc == 0 and not (out / "keep.txt").exists()
    params = json.loads((out / "manifest.json").read_text())["images"]["rgb"]["params"]
    assert params["stage1"]["jpeg_quality"] == 70 and params["sharpen"] is False
    config.write_text('base = "mild"\nblurr = 1\n', encoding="utf-8")
    assert main(["degrade", str(sources / "rgb.png"), "-o", str(tmp_path / "x"), "--preset", str(config)]) == 2
    assert "unknown key 'blurr'" in capsys.readouterr().err
    assert main(["degrade", str(sources / "rgb.png"), "-o", str(tmp_path / "x"), "--preset", "heavy"]) == 2


def test_per_image_random_crops(tmp_path, sources) -> None:
    out = tmp_path / "out"
    args = ["degrade", str(sources / "rgb.png"), str(sources / "gray.png"), "-o", str(out), "--crop", "16"]
    assert main([*args, "--per-image", "3"]) == 2  # needs --crop-mode random
    assert main([*args, "--per-image", "3", "--crop-mode", "random", "--preset", "bicubic"]) == 0
    images = json.loads((out / "manifest.json").read_text())["images"]
    assert sorted(images) == [f"{n}_{k:03d}" for n in ("gray", "rgb") for k in range(3)]
    boxes = {(e["crop"]["top"], e["crop"]["left"]) for n, e in images.items() if n.startswith("rgb")}
    assert len(boxes) == 3
