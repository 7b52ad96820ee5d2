"""The demo's work functions without a browser: checks, output modes and bit depths, progress, limits."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from varestorer import Restorer
from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.cli.main import main
from varestorer.demo.app import (
    DemoInputError,
    load_upload,
    output_name,
    restore_upload,
)
from varestorer.inference.tiling import count_tiles
from varestorer.io.images import read_image
from varestorer.restore_spec import RestoreSpec


@pytest.fixture
def checkpoint(tmp_path):
    model = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2))
    return str(model.save_pretrained(tmp_path / "ckpt"))


@pytest.fixture
def restorer(checkpoint):
    return Restorer.from_pretrained(checkpoint, device="cpu")


def _write_uploads(folder, tiny_image) -> dict[str, tuple[int, type]]:
    """One upload per kind the page accepts; name -> (channels, dtype) the download must keep."""
    folder.mkdir()
    rgb = tiny_image(10, 12)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((10, 12), 90, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=90)
    Image.fromarray(rgb).save(folder / "photo.webp", lossless=True)
    deep = (rgb.astype(np.uint16) * 257 + 5).astype(np.uint16)
    cv2.imwrite(str(folder / "deep.png"), deep[..., ::-1])
    Image.fromarray(deep[..., 0]).save(folder / "gray16.png")
    return {
        "rgb.png": (3, np.uint8),
        "rgba.png": (4, np.uint8),
        "gray.png": (1, np.uint8),
        "palette.png": (3, np.uint8),
        "photo.jpg": (3, np.uint8),
        "photo.webp": (3, np.uint8),
        "deep.png": (3, np.uint16),
        "gray16.png": (1, np.uint16),
    }


def test_downloads_keep_format_mode_and_bit_depth_and_equal_the_restore_command(
    tmp_path, tiny_image, checkpoint, restorer
) -> None:
    kinds = _write_uploads(tmp_path / "in", tiny_image)
    folder = tmp_path / "demo"
    folder.mkdir()
    assert (
        main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "ref"), "--model", checkpoint, "--scale", "2.5"])
        == 0
    )
    for name, (channels, dtype) in kinds.items():
        result = restore_upload(restorer, load_upload(tmp_path / "in" / name), folder, scale=2.5)
        assert result.path.name == output_name(name, 2.5) and result.path.suffix == (tmp_path / "in" / name).suffix
        restored = read_image(result.path)
        assert restored.shape == (25, 30, channels) and restored.dtype == dtype, name
        assert result.before.shape == result.after.shape == (25, 30, 4 if channels == 4 else 3), name
        assert result.before.dtype == result.after.dtype == np.uint8
        assert result.path.read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
        assert f"-> 30x25 {'gray' if channels == 1 else 'RGB' if channels == 3 else 'RGBA'}" in result.summary
    assert len(np.unique(read_image(folder.glob("job-*/deep_x2.5.png").__next__()) % 257)) > 1  # real 16 bits
    # Every file lives in its own job folder inside the given folder; the uploads are untouched.
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert len(written) == len(kinds) and all(p.parent.parent == folder for p in written)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == sorted(kinds)


def test_bad_uploads_get_one_clear_line(tmp_path, tiny_image) -> None:
    with pytest.raises(DemoInputError, match="upload an image first"):
        load_upload(None)
    notes = tmp_path / "notes.png"
    notes.write_text("not pixels")
    with pytest.raises(DemoInputError, match=r"^notes.png is not an image"):
        load_upload(notes)
    Image.fromarray(tiny_image(30, 40)).save(tmp_path / "big.png")
    with pytest.raises(DemoInputError, match=r"big.png is 40x30 = 1,200 pixels, above this demo's limit of 1,000"):
        load_upload(tmp_path / "big.png", max_pixels=1000)
    assert load_upload(tmp_path / "big.png", max_pixels=1200).array.shape == (30, 40, 3)
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(DemoInputError, match="unsupported colour mode 'F'"):
        load_upload(tmp_path / "float.tif")
    whole = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DemoInputError, match=r"^cut.png: not a readable image") as caught:
        load_upload(tmp_path / "cut.png")
    assert str(tmp_path) not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": 0}, "scale must be a number above 0"),
        ({"scale": -2}, "scale must be a number above 0"),
        ({"scale": float("nan")}, "scale must be a number above 0"),
        ({"scale": 8.5}, "at most 8"),
        ({"tile": -1}, "tile size must be a whole number"),
        ({"tile": 12.5}, "tile size must be a whole number"),
        ({"tile": 4}, "tile size must be at least 8"),
        ({"color_fix": "sepia"}, "colour fix must be one of"),
        ({"prompt": "a cat"}, "SRVGGNetCompact takes no text prompt"),
    ],
)
def test_bad_options_get_one_clear_line(tmp_path, tiny_image, restorer, options, message) -> None:
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "a.png")
    with pytest.raises(DemoInputError, match=message):
        restore_upload(restorer, load_upload(tmp_path / "a.png"), tmp_path, **options)
    assert not list(tmp_path.glob("job-*"))  # nothing written for a refused job


def test_options_reach_the_restorer_and_progress_counts_tiles(tmp_path, tiny_image, restorer) -> None:
    Image.fromarray(tiny_image(20, 28)).save(tmp_path / "a.png")
    upload = load_upload(tmp_path / "a.png")
    calls: list[tuple[int, int]] = []
    result = restore_upload(
        restorer,
        upload,
        tmp_path,
        scale=1.5,
        tile=8,
        color_fix="adain",
        prompt="  ",
        progress=lambda *c: calls.append(c),
    )
    # The restorer's overlap for a free-size model is min(32, tile // 4); its mirrored edge context
    # (``Restorer.edge_context`` LQ pixels on every side) is tiled too.
    margin = 2 * restorer.edge_context
    total = count_tiles(20 + margin, 28 + margin, 8, 2)
    assert total > 1 and calls[0] == (0, total) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == list(range(total + 1))
    expected = restorer(upload.array, scale=1.5, tile=8, color_fix="adain")
    np.testing.assert_array_equal(read_image(result.path), expected)
    assert read_image(result.path).shape == (30, 42, 3)
    default = restore_upload(restorer, upload, tmp_path, scale=None, tile=0, color_fix="model default")
    np.testing.assert_array_equal(read_image(default.path), restorer(upload.array))
    assert default.path.parent != result.path.parent and default.path.name == "a_x2.png"  # one folder per job


def test_output_names() -> None:
    assert output_name("chelsea.png", 4.0) == "chelsea_x4.png"
    assert output_name("Photo.JPG", 2.5) == "Photo_x2.5.jpg"
    assert output_name("anim.gif", 2) == "anim_x2.png"  # formats we do not write become PNG


def test_demo_command_errors(monkeypatch, capsys) -> None:
    assert main(["demo", "--max-pixels", "0"]) == 2
    assert "--max-pixels must be at least 1" in capsys.readouterr().err
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real_find_spec(name, *a)
    )
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "varestorer demo: error: the web demo needs gradio: pip install 'varestorer[demo]'"


@pytest.mark.slow  # importing gradio alone takes 3.7 s of CPU (the test: 8 s at load ~8): in -m slow
def test_page_shows_errors_hides_the_prompt_and_queues_one_job(tmp_path, tiny_image, restorer, monkeypatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # read when gradio is imported
    gr = pytest.importorskip("gradio")
    from varestorer.demo.app import build_app

    app = build_app(restorer, tmp_path, max_pixels=1000)
    prompt = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "prompt")
    assert prompt.visible is False  # the model reads no text
    functions = {fn.name: fn for fn in app.fns.values()}
    assert functions["run"].concurrency_limit == 1 and functions["run"].concurrency_id == "restore"
    (tmp_path / "notes.png").write_text("not pixels")
    with pytest.raises(gr.Error, match="notes.png is not an image"):
        functions["show_input"].fn(str(tmp_path / "notes.png"))
    Image.fromarray(tiny_image(8, 10)).save(tmp_path / "a.png")
    preview, status = functions["show_input"].fn(str(tmp_path / "a.png"))
    assert preview.shape == (8, 10, 3) and "10x8 RGB 8-bit" in status
    (before, after), status, path = functions["run"].fn(
        str(tmp_path / "a.png"), 2.0, 0, "none", "", lambda *a, **k: None
    )
    assert after.shape == before.shape == (16, 20, 3) and read_image(path).shape == (16, 20, 3) and "a_x2.png" in status
    # A model that reads text gets the prompt box.
    text_model = SimpleNamespace(encode_prompts=len)
    text_restorer = SimpleNamespace(
        model=text_model, scale=4, device="cpu", dtype=restorer.dtype, spec=RestoreSpec(scale=4, reads_prompts=True)
    )
    page = build_app(text_restorer, tmp_path)
    assert next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == "prompt").visible is True
