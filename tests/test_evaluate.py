"""``varestorer evaluate``: pairing by stem, bad files reported and skipped, atomic JSON/CSV, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
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
    report = evaluate(pred, gt, ["psnr", "ssim"], crop_border=4, protocol="basicsr")
    assert sorted(report.per_image) == ["a", "b", "c"] and not report.problems
    assert report.per_image["a"]["ssim"] == pytest.approx(1.0)
    finite = [row["ssim"] for row in report.per_image.values()]
    assert report.mean["ssim"] == pytest.approx(sum(finite) / 3)
    assert report.to_json_dict()["per_image"]["a"]["psnr"] is None  # inf is not valid JSON
    pyiqa = evaluate(pred, gt, ["psnr"], crop_border=4)  # the default protocol caps identical images at 80 dB
    assert pyiqa.per_image["a"]["psnr"] == pytest.approx(80.0) and pyiqa.settings["protocol"] == "pyiqa"


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


def test_a_metric_that_cannot_score_an_image_leaves_only_itself_out(tmp_path: Path, tiny_image, monkeypatch) -> None:
    """NIQE on an image under two 96x96 blocks: PSNR is still scored there, NIQE's mean is over the rest."""
    from varestorer.metrics import niqe

    window = np.outer(*[np.exp(-0.5 * (np.arange(-3, 4) / (7 / 6)) ** 2)] * 2)
    window /= window.sum()
    big = tiny_image(200, 200, seed=3)
    luma = np.round(big.astype(np.float64) @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103]))
    features = niqe.niqe_features(luma, window)
    model = {"mu": features.mean(0) + 1.0, "cov": np.cov(features, rowvar=False), "gaussian_window": window}
    monkeypatch.setattr(niqe, "load_pristine_model", lambda: model)  # the real LIVE file is a fetched asset
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for folder, seed in ((pred, 0), (gt, 1)):
        folder.mkdir()
        Image.fromarray(tiny_image(200, 200, seed=3 + seed)).save(folder / "big.png")
        Image.fromarray(tiny_image(100, 120, seed=5 + seed)).save(folder / "small.png")  # one 96x96 block
    report = evaluate(pred, gt, ["psnr", "niqe"])
    assert sorted(report.per_image) == ["big", "small"] and "psnr" in report.per_image["small"]
    assert "niqe" not in report.per_image["small"] and report.counts == {"psnr": 2, "niqe": 1}
    assert report.mean["niqe"] == pytest.approx(report.per_image["big"]["niqe"]) and report.mean["niqe"] > 0
    why = "NIQE needs at least two 96x96 blocks, a 120x100 image has 1"
    assert report.problems == [f"{pred / 'small.png'}: niqe not scored: {why}"]
    out_csv = tmp_path / "r.csv"
    argv = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr,niqe", "--csv", str(out_csv)]
    assert main(argv) == 1
    rows = {row[0]: row for row in csv.reader(out_csv.open())}
    assert rows["small"][2] == "" and float(rows["small"][1]) > 0 and float(rows["big"][2]) > 0


def test_cli_reference_prints_and_stores_the_per_image_agreement(tmp_path: Path, tiny_image, capsys) -> None:
    pred, gt = _folders(tmp_path, tiny_image)
    ours = evaluate(pred, gt, ["psnr", "ssim"], crop_border=0).per_image
    log = tmp_path / "peer_metrics.log"
    log.write_text(  # a pyiqa log: b off by 0.5 dB, c missing, an image we do not have
        "24-10-23 17:36:07 - INFO: Testing Directory: [results]\n"
        + "".join(
            f"24-10-23 17:36:18 - INFO: results/{stem}.png | PSNR: {ours[stem]['psnr'] + shift:.6f}; "
            f"SSIM: {ours[stem]['ssim']:.6f}; CLIPIQA: 0.5 | Runtime: 1.13 sec\n"
            for stem, shift in (("a", 0.0), ("b", 0.5))
        )
        + "24-10-23 17:36:19 - INFO: results/zzz.png | PSNR: 30.0; SSIM: 0.9 | Runtime: 0.41 sec\n"
    )
    out = tmp_path / "report.json"
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "psnr,ssim", "--crop-border", "0",
                 "--reference", str(log), "--json", str(out), "-q"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "agreement with" in printed and "psnr" in printed
    agreement = json.loads(out.read_text())["settings"]["reference"]["agreement"]
    assert set(agreement) == {"psnr", "ssim"}
    assert agreement["psnr"]["count"] == 2 and agreement["psnr"]["worst"] == "b"
    assert agreement["psnr"]["max_abs"] == pytest.approx(0.5, abs=1e-5)
    assert agreement["psnr"]["mean_abs"] == pytest.approx(0.25, abs=1e-5)
    assert agreement["ssim"]["max_abs"] < 1e-6
    bad = tmp_path / "empty.log"
    bad.write_text("nothing per image here\n")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--reference", str(bad)]) != 0
    assert "no per-image scores" in capsys.readouterr().err  # refused before anything is scored
