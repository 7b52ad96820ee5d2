"""Hub ids, offline: a pre-filled Hugging Face cache (its own layout) and HF_HUB_OFFLINE=1."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

from test_official import release_folder, tiny_config  # noqa: E402
from varestorer.checkpoint import hub_file, is_hub_id  # noqa: E402
from varestorer.inference.restorer import Restorer  # noqa: E402
from varestorer.models.official import OfficialVARestorer  # noqa: E402

REVISION = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Lay files out as huggingface_hub's cache does: refs/main -> snapshots/<revision>/<file>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    for name, source in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_ids_are_told_apart_from_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("EvanEternal/VARestorer") and is_hub_id("lxq007/DiffBIR")
    (tmp_path / "runs").mkdir()
    assert not is_hub_id("runs/student")  # a local folder that does not exist yet: reported as missing
    assert not is_hub_id("weights/model.pth") and not is_hub_id("default") and not is_hub_id("a/b/c")


def test_a_cached_hub_checkpoint_loads_offline(offline_cache: Path, tmp_path: Path) -> None:
    folder = release_folder(tmp_path / "release", tiny_config())
    files = {p.name: p for p in folder.iterdir()}
    cache_repo(offline_cache, "someone/tiny-official", files)
    restorer = Restorer.from_pretrained("someone/tiny-official", device="cpu", dtype="float32")
    assert isinstance(restorer.model, OfficialVARestorer)
    out = restorer(np.zeros((16, 16, 3), dtype=np.uint8))
    assert out.shape == (64, 64, 3)


def test_the_official_release_assembles_from_four_cached_repos(offline_cache: Path, tmp_path: Path) -> None:
    folder = release_folder(tmp_path / "release", tiny_config())
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text("{}")
    cache_repo(offline_cache, "EvanEternal/VARestorer", {"weights/varestorer.pth": folder / "varestorer.pth"})
    cache_repo(
        offline_cache, "FoundationVision/Infinity", {"infinity_vae_d32reg.pth": folder / "infinity_vae_d32reg.pth"}
    )
    cache_repo(offline_cache, "lxq007/DiffBIR", {"general_swinir_v1.ckpt": folder / "general_swinir_v1.ckpt"})
    t5 = cache_repo(offline_cache, "google/flan-t5-xl", {"config.json": tmp_path / "t5" / "config.json"})
    model = OfficialVARestorer.from_hub(config=tiny_config())
    assert model.text_folder == str(t5) and model.swinir is not None
    assert (
        hub_file("lxq007/DiffBIR", "general_swinir_v1.ckpt").read_bytes()
        == (folder / "general_swinir_v1.ckpt").read_bytes()
    )


def test_offline_without_the_files_is_one_line_naming_what_to_fetch(offline_cache: Path, tmp_path: Path) -> None:
    from varestorer.cli.main import main

    with pytest.raises(FileNotFoundError) as info:
        Restorer.from_pretrained("EvanEternal/VARestorer")
    message = str(info.value)
    assert "\n" not in message
    for command in (
        "hf download EvanEternal/VARestorer weights/varestorer.pth",
        "hf download FoundationVision/Infinity infinity_vae_d32reg.pth",
        "hf download lxq007/DiffBIR general_swinir_v1.ckpt",
        "hf download google/flan-t5-xl",
    ):
        assert command in message
    with pytest.raises(FileNotFoundError, match="someone/missing is not in the Hub cache .*offline"):
        Restorer.from_pretrained("someone/missing")
    (tmp_path / "in.png").write_bytes(b"")
    assert main(["restore", str(tmp_path / "in.png"), "-o", str(tmp_path / "o"), "--model", "someone/missing"]) != 0
