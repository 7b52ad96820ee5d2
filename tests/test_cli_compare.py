"""``varestorer compare``: labelled crop sheets from methods, stored outputs and GT; failures named, no overwrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from varestorer.cli.compare import auto_crops, parse_crop
from varestorer.cli.main import main


def _tree(tmp_path: Path, tiny_image) -> tuple[Path, Path, Path]:
    lq, gt, stored = tmp_path / "lq", tmp_path / "gt", tmp_path / "osediff"
    for folder in (lq, gt, stored):
        folder.mkdir()
    for index, stem in enumerate(["a", "b"]):
        Image.fromarray(tiny_image(16, 20, seed=index)).save(lq / f"{stem}.png")
        Image.fromarray(tiny_image(64, 80, seed=index + 5)).save(gt / f"{stem}.png")
        Image.fromarray(np.full((64, 80, 3), 40 * (index + 1), np.uint8)).save(stored / f"{stem}.png")
    return lq, gt, stored


def test_compare_writes_one_labelled_sheet_per_image(tmp_path: Path, tiny_image) -> None:
    lq, gt, stored = _tree(tmp_path, tiny_image)
    out = tmp_path / "sheets"
    args = ["compare", str(lq), "--method", "bicubic", "--method", f"osediff={stored}", "--gt", str(gt),
            "--crop", "8,4,24,20", "--crop", "0,0,16,16", "-o", str(out), "--ext", "png", "-q"]  # fmt: skip
    assert main(args) == 0
    sheet = np.asarray(Image.open(out / "a.png"))
    # two rows (one per crop) of LQ | bicubic | osediff | GT, each tile under a 14 px label band
    assert sheet.shape[1] == 4 * 24 + 3 * 2
    assert sheet.shape[0] == (14 + 14 + 20) + 2 + (14 + 14 + 16)
    osediff_tile = sheet[28 : 28 + 20, 2 * (24 + 2) : 2 * (24 + 2) + 24]
    assert (osediff_tile == 40).all()  # the stored output's pixels, cropped at 8,4
    gt_tile = sheet[28 : 28 + 20, 3 * (24 + 2) :]
    assert (gt_tile == np.asarray(Image.open(gt / "a.png"))[4:24, 8:32]).all()
    assert (sheet[:14] != 255).any()  # the row's title is drawn
    assert main(args) == 1  # sheets exist: refused per image, named
    assert main([*args, "--overwrite"]) == 0


def test_compare_reports_bad_inputs_and_keeps_going(tmp_path: Path, tiny_image, capsys) -> None:
    lq, gt, stored = _tree(tmp_path, tiny_image)
    (lq / "broken.png").write_bytes(b"not a png")
    Image.fromarray(tiny_image(16, 20, seed=9)).save(lq / "c.png")  # no GT and no stored output of that stem
    grid = tmp_path / "grid.jpg"
    code = main(["compare", str(lq), "--method", f"osediff={stored}", "--gt", str(gt), "--grid", "-o", str(grid),
                 "--auto-crops", "2", "--crop-size", "16", "--zoom", "2", "-q"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "2 of 4 image(s) failed" in err and "broken.png" in err and "c.png" in err
    assert Image.open(grid).format == "JPEG"
    width, height = Image.open(grid).size
    assert width == 3 * 32 + 2 * 2 and height == 4 * (14 + 14 + 32) + 3 * 2  # a, b: two crops each, zoomed x2
    assert main(["compare", str(lq), "--method", "bicubic", "--grid", "-o", str(grid)]) == 2  # exists: refused


def test_compare_runs_an_embedded_peer(tmp_path: Path, tiny_image) -> None:
    lq, _, _ = _tree(tmp_path, tiny_image)
    out = tmp_path / "sheets"
    assert main(["compare", str(lq / "a.png"), "--method", "realesr-general-x4v3", "-o", str(out), "-q"]) == 0
    assert Image.open(out / "a.jpg").size[0] == 2 * 64 + 2  # LQ | x4v3, one automatic 64 px crop (the whole height)


def test_crop_parsing_and_automatic_choice() -> None:
    assert parse_crop("1,2,3,4") == (1, 2, 3, 4)
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,5", "-1,0,4,4"):
        with pytest.raises(ValueError, match="--crop"):
            parse_crop(bad)
    image = np.zeros((64, 96, 3), np.uint8)
    image[40:56, 60:76] = np.indices((16, 16)).sum(axis=0)[..., None] % 2 * 255  # detail in one corner
    crops = auto_crops(image, 2, 16)
    assert crops[0] == (60, 40, 16, 16)
    assert len(crops) == 2 and (abs(crops[1][0] - 60) >= 16 or abs(crops[1][1] - 40) >= 16)
    assert main(["compare", "nothing-here", "--method", "bicubic", "-o", "x"]) == 2
