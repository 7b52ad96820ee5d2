"""realesr-general-x4v3 shipped inside the package (fp16 + BSD-3 licence), found by name everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import varestorer
from varestorer.archs.srvgg import SRVGG_PRESETS, SRVGGConfig, SRVGGNetCompact
from varestorer.checkpoint import load_weights
from varestorer.cli.main import main
from varestorer.families import load_pretrained
from varestorer.foreign.peers import DEFAULT_PRECLEANER, EMBEDDED_PEERS, load_peer, load_precleaner, peer_weights
from varestorer.io.images import read_image, write_image

FOLDER = Path(varestorer.__file__).parent / "weights" / "realesr-general-x4v3"


def test_embedded_folder_loads_strictly_in_fp16_with_its_licence() -> None:
    assert EMBEDDED_PEERS["realesr-general-x4v3"] == FOLDER.name and DEFAULT_PRECLEANER in EMBEDDED_PEERS
    model = load_pretrained(FOLDER, require="peer", what="a peer arch")  # from_pretrained: strict keys and shapes
    assert isinstance(model, SRVGGNetCompact) and model.config == SRVGG_PRESETS["realesr-general-x4v3"]
    stored = load_weights(FOLDER)
    assert stored and {t.dtype for t in stored.values()} == {torch.float16}
    assert sum(t.numel() for t in stored.values()) == sum(p.numel() for p in model.parameters())
    licence = (FOLDER / "LICENSE-Real-ESRGAN.txt").read_text(encoding="utf-8")
    assert licence.startswith("BSD 3-Clause License") and "Xintao Wang" in licence
    source = (FOLDER / "SOURCE.md").read_text(encoding="utf-8")
    assert "sha256" in source and "recipes/embed_x4v3.py" in source


def test_names_resolve_to_the_embedded_folder_and_paths_win(tmp_path, monkeypatch) -> None:
    assert peer_weights("realesr-general-x4v3") == FOLDER
    assert peer_weights(tmp_path / "x.pth") == tmp_path / "x.pth"  # a path stays a path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "realesr-general-x4v3").mkdir()  # a user's own folder of that name is what they meant
    assert peer_weights("realesr-general-x4v3") == Path("realesr-general-x4v3")
    monkeypatch.chdir(FOLDER.parent.parent)
    by_name = load_peer("realesr-general-x4v3").state_dict()
    assert all(torch.equal(by_name[k], v) for k, v in load_pretrained(FOLDER).state_dict().items())
    cleaner = load_precleaner(DEFAULT_PRECLEANER)
    assert cleaner.scale == 4 and cleaner(torch.rand(1, 3, 5, 6)).shape == (1, 3, 5, 6)


def test_baseline_restores_by_name_to_four_times_the_size(tmp_path, tiny_image, capsys) -> None:
    write_image(tmp_path / "in" / "a.png", tiny_image(7, 5))
    base = ["baseline", str(tmp_path / "in"), "--method", "realesr-general-x4v3"]
    assert main([*base, "-o", str(tmp_path / "out")]) == 0  # no --weights: the embedded ones
    out = read_image(tmp_path / "out" / "a.png")
    assert out.shape == (28, 20, 3) and out.std() > 0
    assert main([*base, "-o", str(tmp_path / "named"), "--weights", "realesr-general-x4v3"]) == 0
    assert (read_image(tmp_path / "named" / "a.png") == out).all()


def test_bench_times_the_embedded_weights() -> None:
    from varestorer.benchmark.bench import peer_module

    net = peer_module("realesr-general-x4v3")
    shipped = load_pretrained(FOLDER).state_dict()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in shipped.items())


@pytest.mark.parametrize("option", ["default", "realesr-general-x4v3"])
def test_restore_precleaner_default_is_the_embedded_peer(tmp_path, tiny_image, option) -> None:
    checkpoint = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2)).save_pretrained(tmp_path / "ckpt")
    write_image(tmp_path / "a.png", tiny_image(8, 8))
    args = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(checkpoint)]
    assert main([*args, "--precleaner", option, "--device", "cpu", "--dtype", "float32"]) == 0
    assert read_image(tmp_path / "out" / "a.png").shape == (16, 16, 3)


def test_restore_runs_the_embedded_peer_by_name(tmp_path, tiny_image) -> None:
    """``restore --model realesr-general-x4v3`` (and ``Restorer.from_pretrained``) find the shipped copy."""
    write_image(tmp_path / "in" / "a.png", tiny_image(12, 10, seed=3))
    assert main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "realesr-general-x4v3"]) == 0
    assert read_image(tmp_path / "out" / "a.png").shape == (48, 40, 3)
