"""``varestorer evaluate``: pairing by stem, bad files reported and skipped, atomic JSON/CSV, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from varestorer.cli.main import main
from varestorer.metrics.evaluate import evaluate


def _folders(tmp_path: Path, tiny_image) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    for index, stem in enumerate(["a", "b", "c"]):
        Image.fromarray(tiny_image(40, 48, seed=index)).save(gt / f"{stem}.png")
        Image.fromarray(tiny_image(40, 48, seed=index + 10)).save(pred / f"{stem}.png")
    return pred, gt


def test_evaluate_pairs_by_stem_and_averages(tmp_path: Path, tiny_image) -> None:
    pred, gt = _folders(tmp_path, tiny_image)
    Image.fromarray(tiny_image(40, 48, seed=0)).save(pred / "a.png")  # identical to its GT
    report = evaluate(pred, gt, ["psnr", "ssim"], crop_border=4)
    assert sorted(report.per_image) == ["a", "b", "c"] and not report.problems
    assert report.per_image["a"]["ssim"] == pytest.approx(1.0)
    finite = [row["ssim"] for row in report.per_image.values()]
    assert report.mean["ssim"] == pytest.approx(sum(finite) / 3)
    assert report.to_json_dict()["per_image"]["a"]["psnr"] is None  # inf is not valid JSON


def test_cli_reports_bad_files_and_keeps_going(tmp_path: Path, tiny_image, capsys) -> None:
    pred, gt = _folders(tmp_path, tiny_image)
    Image.fromarray(tiny_image(20, 24)).save(pred / "c.png")  # size mismatch
    (pred / "d.png").write_bytes(b"not an image")  # unreadable
    Image.fromarray(tiny_image(40, 48)).save(gt / "d.png")
    Image.fromarray(tiny_image(40, 48)).save(pred / "e.png")  # no GT
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    argv = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr,ssim,psnr-rgb"]
    code = main([*argv, "--json", str(out_json), "--csv", str(out_csv)])
    captured = capsys.readouterr()
    assert code == 1
    assert "c.png: size 24x20 differs from ground truth 48x40" in captured.err
    assert "d.png: not a readable image" in captured.err and "e.png: no ground truth" in captured.err
    assert "mean" in captured.out and "psnr" in captured.out
    data = json.loads(out_json.read_text())
    assert data["count"] == 2 and sorted(data["per_image"]) == ["a", "b"]
    assert set(data["mean"]) == {"psnr", "ssim", "psnr-rgb"} and data["settings"]["crop_border"] == 4
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["image", "psnr", "ssim", "psnr-rgb"] and rows[-1][0] == "mean" and len(rows) == 4
    # no silent overwrite
    before = out_json.read_text()
    assert main([*argv, "--json", str(out_json)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out_json.read_text() == before
    assert main([*argv, "--json", str(out_json), "--overwrite", "--crop-border", "0"]) == 1
    assert json.loads(out_json.read_text())["settings"]["crop_border"] == 0


def test_cli_clean_run_and_argument_errors(tmp_path: Path, tiny_image, capsys) -> None:
    pred, gt = _folders(tmp_path, tiny_image)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "ssim", "--quiet"]) == 0
    assert main(["evaluate", "--pred", str(pred), "--metrics", "psnr"]) == 2
    assert "need ground truth" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(gt), "--metrics", "psnr"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_missing_asset_names_the_fetch_command(tmp_path: Path, tiny_image, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VARESTORER_CACHE", str(tmp_path / "empty-cache"))
    pred, _ = _folders(tmp_path, tiny_image)
    assert main(["evaluate", "--pred", str(pred), "--metrics", "niqe"]) == 2
    assert "varestorer assets fetch niqe-pristine" in capsys.readouterr().err
