"""``varestorer restore`` end to end: every image mode, every bad input, no data loss."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.cli.main import main
from varestorer.io.images import read_image, write_image


@pytest.fixture
def checkpoint(tmp_path):
    model = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2))
    return str(model.save_pretrained(tmp_path / "ckpt"))


def _write_modes(folder, tiny_image) -> dict[str, tuple]:
    """Write one file per image mode; returns name -> (expected output shape at x2, dtype)."""
    folder.mkdir()
    rgb = tiny_image(8, 6)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    rgba = np.dstack([rgb, np.full((8, 6), 77, np.uint8)])
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif)
    deep = (rgb.astype(np.uint16) * 257 + 3).astype(np.uint16)
    cv2.imwrite(str(folder / "deep.png"), deep[..., ::-1])
    cv2.imwrite(str(folder / "deep.tif"), deep[..., ::-1])
    Image.fromarray(deep[..., 0]).save(folder / "gray16.png")
    return {
        "rgb.png": ((16, 12, 3), np.uint8),
        "gray.png": ((16, 12, 1), np.uint8),
        "rgba.png": ((16, 12, 4), np.uint8),
        "palette.png": ((16, 12, 3), np.uint8),
        "cmyk.jpg": ((16, 12, 3), np.uint8),
        "rotated.jpg": ((12, 16, 3), np.uint8),
        "deep.png": ((16, 12, 3), np.uint16),
        "deep.tif": ((16, 12, 3), np.uint16),
        "gray16.png": ((16, 12, 1), np.uint16),
    }


def test_every_image_mode_round_trips(tmp_path, tiny_image, checkpoint, capsys) -> None:
    expected = _write_modes(tmp_path / "in", tiny_image)
    assert read_image(tmp_path / "in" / "deep.png").dtype == np.uint16  # Pillow alone would give 8 bits
    assert read_image(tmp_path / "in" / "rotated.jpg").shape == (6, 8, 3)  # EXIF orientation applied
    code = main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", checkpoint, "--scale", "2"])
    assert code == 0, capsys.readouterr().err
    assert "restored 9, skipped 0 (exist), failed 0" in capsys.readouterr().out
    for name, (shape, dtype) in expected.items():
        out = read_image(tmp_path / "out" / name)
        assert out.shape == shape and out.dtype == dtype, name
    deep = read_image(tmp_path / "out" / "deep.png")
    assert len(np.unique(deep % 257)) > 1  # real 16-bit values, not 8 bits scaled
    assert np.all(read_image(tmp_path / "out" / "rgba.png")[..., 3] == 77)  # alpha kept
    assert not list((tmp_path / "out").glob(".*"))  # atomic writes leave no temporary files


def test_bad_inputs_are_reported_and_the_rest_restored(tmp_path, tiny_image, checkpoint, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(tiny_image(8, 8)).save(folder / "good.png")
    png = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (folder / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (300, 300)).save(folder / "bomb.png")  # over --max-pixels below
    (tmp_path / "notes.txt").write_text("not an image")
    args = [str(folder), str(tmp_path / "notes.txt"), str(tmp_path / "missing.png")]
    code = main(["restore", *args, "-o", str(tmp_path / "out"), "--model", checkpoint, "--max-pixels", "10000"])
    captured = capsys.readouterr()
    assert code == 1
    assert (tmp_path / "out" / "good.png").is_file()
    for name in ("truncated.png", "corrupt.png", "empty.jpg", "bomb.png", "notes.txt", "missing.png"):
        assert sum(name in line for line in captured.err.splitlines() if line.startswith("FAILED")) == 1, name
        assert not (tmp_path / "out" / name).exists()
    assert "pixel limit" in captured.err and "restored 1, skipped 0 (exist), failed 6" in captured.out


def test_inputs_and_existing_outputs_are_never_overwritten(tmp_path, tiny_image, checkpoint, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(tiny_image(8, 8)).save(folder / "a.png")
    original = (folder / "a.png").read_bytes()
    assert main(["restore", str(folder / "a.png"), "-o", str(folder), "--model", checkpoint, "--overwrite"]) == 1
    assert "is the input itself" in capsys.readouterr().err and (folder / "a.png").read_bytes() == original
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"keep me")
    assert main(["restore", str(folder / "a.png"), "-o", str(out), "--model", checkpoint]) == 0
    assert "skipped" in capsys.readouterr().err and (out / "a.png").read_bytes() == b"keep me"
    assert main(["restore", str(folder / "a.png"), "-o", str(out), "--model", checkpoint, "--overwrite"]) == 0
    assert read_image(out / "a.png").shape == (16, 16, 3)


def test_recursive_globs_suffix_ext_and_fractional_scale(tmp_path, tiny_image, checkpoint, capsys) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(tiny_image(7, 5)).save(tmp_path / "in" / "top.png")
    Image.fromarray(tiny_image(9, 4)).save(tmp_path / "in" / "sub" / "deep.jpg")
    out = tmp_path / "out"
    common = ["--model", checkpoint, "--scale", "1.5", "--suffix", "_x", "--ext", "png", "--tile", "4"]
    assert main(["restore", str(tmp_path / "in"), "-o", str(out), "--recursive", *common]) == 0
    assert read_image(out / "top_x.png").shape == (round(1.5 * 7), round(1.5 * 5), 3)
    assert read_image(out / "sub" / "deep_x.png").shape == (round(1.5 * 9), round(1.5 * 4), 3)
    assert main(["restore", str(tmp_path / "in" / "*.png"), "-o", str(tmp_path / "glob"), *common]) == 0
    assert [p.name for p in (tmp_path / "glob").iterdir()] == ["top_x.png"]


def test_options_and_one_line_errors(tmp_path, tiny_image, checkpoint, capsys) -> None:
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "a.png")
    assert main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "default")]) == 0  # the embedded model
    assert (tmp_path / "default" / "a.png").is_file()
    base = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    assert main([*base, "--model", checkpoint, "--precleaner", str(tmp_path / "none.pth")]) == 2
    assert "none.pth" in capsys.readouterr().err
    assert main([*base, "--model", checkpoint, "--prompt", "a cat"]) == 2
    assert "takes no text prompt" in capsys.readouterr().err
    options = ["--color-fix", "wavelet", "--precleaner", checkpoint, "--device", "cpu", "--dtype", "float32"]
    assert main([*base, "--model", checkpoint, *options, "--batch-size", "2", "--tile", "4"]) == 0
    assert read_image(tmp_path / "out" / "a.png").shape == (16, 16, 3)
    assert main([*base, "--model", checkpoint, "--color-fix", "wavelet", "--color-fix-levels", "0"]) == 2
    assert "at least 1 level" in capsys.readouterr().err


def test_precleaner_takes_the_place_of_the_defaults_own(tmp_path, tiny_image, capsys, monkeypatch) -> None:
    """--precleaner with the embedded default swaps its realesr-general-x4v3 for the given x4 network; an x2 one, or
    realesrgan-x4plus without its fetched weights, is a one-line error."""
    Image.fromarray(tiny_image(12, 12)).save(tmp_path / "a.png")
    four = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=4)).save_pretrained(tmp_path / "x4")
    base = ["restore", str(tmp_path / "a.png"), "--dtype", "float32"]
    assert main([*base, "-o", str(tmp_path / "own")]) == 0
    assert main([*base, "-o", str(tmp_path / "swapped"), "--precleaner", str(four)]) == 0
    own, swapped = (read_image(tmp_path / sub / "a.png") for sub in ("own", "swapped"))
    assert own.shape == swapped.shape == (48, 48, 3) and np.abs(own.astype(int) - swapped).max() > 8
    two = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2)).save_pretrained(tmp_path / "x2")
    assert main([*base, "-o", str(tmp_path / "x2out"), "--precleaner", str(two)]) == 2
    assert "upsamples x4: a x2 one cannot take its place" in capsys.readouterr().err
    monkeypatch.setenv("VARESTORER_CACHE", str(tmp_path / "empty"))
    assert main([*base, "-o", str(tmp_path / "plus"), "--precleaner", "realesrgan-x4plus"]) == 2
    assert "varestorer assets fetch realesrgan-x4plus" in capsys.readouterr().err
    assert not (tmp_path / "x2out").exists() and not (tmp_path / "plus").exists()


@pytest.mark.slow  # a fresh interpreter importing torch takes ~20 s on the loaded 2-core box
def test_python_dash_m_restore(tmp_path, tiny_image, checkpoint) -> None:
    from conftest import subprocess_env

    Image.fromarray(tiny_image(6, 6)).save(tmp_path / "a.png")
    command = [sys.executable, "-m", "varestorer", "restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "o")]
    result = subprocess.run([*command, "--model", checkpoint], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert "restored 1" in result.stdout and (tmp_path / "o" / "a.png").is_file()


def test_a_refused_run_leaves_no_empty_output_folder(tmp_path, tiny_image) -> None:
    write_image(tmp_path / "in" / "a.png", tiny_image(12, 10))
    assert main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "new" / "deep"), "--model", "nope"]) == 2
    assert not (tmp_path / "new").exists()  # created for the write check, removed again: nothing was written
    assert main(["restore", str(tmp_path / "missing"), "-o", str(tmp_path / "none")]) == 1
    assert not (tmp_path / "none").exists()
    (tmp_path / "mine").mkdir()
    assert main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "mine"), "--model", "nope"]) == 2
    assert (tmp_path / "mine").is_dir()  # a folder the user had stays
