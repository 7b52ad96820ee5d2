"""Checkpoints that lie (issue 31): enormous sizes in config.json, deep nesting, a Hub without network.

Each is refused in one line before any memory is allocated or any retry is waited for.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch import nn

import varestorer
from conftest import subprocess_env
from varestorer import build_limits, checkpoint
from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.checkpoint import read_config
from varestorer.cli.main import main
from varestorer.inference.restorer import Restorer


def _edit_config(folder: Path, **changes: object) -> None:
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(changes)
    (folder / "config.json").write_text(json.dumps(meta))


def test_enormous_sizes_beside_small_weights_are_refused_before_allocating(tmp_path, monkeypatch, capsys) -> None:
    folder = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2)).save_pretrained(tmp_path / "m")
    _edit_config(folder, num_feat=256, num_conv=100)  # 236 MB of float32 convolutions over a 1 KB file
    built: list[int] = []
    original = nn.Conv2d.__init__

    def counting(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(1)

    monkeypatch.setattr(nn.Conv2d, "__init__", counting)
    with pytest.raises(ValueError, match=r"config.json does not belong to these weights \(refused before allocating\)"):
        SRVGGNetCompact.from_pretrained(folder)
    assert len(built) < 40  # stopped at the convolution that passed the limit, not after all 102
    (tmp_path / "in.png").write_bytes((Path(varestorer.__file__).parents[2] / "examples" / "chelsea.png").read_bytes())
    assert main(["restore", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refused before allocating" in err


def test_a_model_above_the_free_memory_is_refused_and_a_fitting_one_is_built(monkeypatch) -> None:
    monkeypatch.setattr(build_limits, "available_memory", lambda: 1_000_000)
    with pytest.raises(ValueError, match=r"^net: .* above the 1.0 MB of free memory \(refused before allocating\)$"):
        build_limits.build_within_limits(
            lambda: nn.Sequential(*[nn.Linear(256, 256) for _ in range(10_000)]), "net", state=None
        )
    small = build_limits.build_within_limits(lambda: nn.Linear(8, 8), "net", state=None)
    assert small.weight.device.type == "cpu"  # the real build after the dry run


def test_a_config_without_weights_is_one_line(tmp_path) -> None:
    folder = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2)).save_pretrained(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    _edit_config(folder, num_feat=256, num_conv=100)
    with pytest.raises(FileNotFoundError, match="no weights in"):
        Restorer.from_pretrained(folder, device="cpu")


def test_deeply_nested_config_json_is_one_line(tmp_path) -> None:
    folder = tmp_path / "nested"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "X", "config": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ValueError, match=r"config.json: unreadable JSON \(nested too deeply\)$"):
        read_config(folder)


@pytest.mark.slow
def test_the_embedded_student_with_an_enormous_transformer_is_refused(tmp_path) -> None:
    folder = tmp_path / "student"
    shutil.copytree(Path(varestorer.__file__).parent / "weights" / "default", folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["transformer"].update(width=4096, depth=10_000)
    (folder / "config.json").write_text(json.dumps(meta))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="does not belong to these weights"):
        Restorer.from_pretrained(folder, device="cpu")
    assert time.perf_counter() - start < 60  # stopped at the first blocks, not after 10,000 of them


# ------------------------------------------------------------------------------------------ the Hub
class _ConnectError(OSError):
    """What a connection without a network raises (httpx's ConnectError is no HTTP answer)."""


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """huggingface_hub with every network call failing like a machine without a network, and a
    record of the downloads asked for (``local_files_only`` of each)."""
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(checkpoint, "_UNREACHABLE", {}, raising=False)
    asked: list[bool] = []

    def download(*args, local_files_only=False, **kwargs):
        asked.append(local_files_only)
        if local_files_only:
            raise hub.errors.LocalEntryNotFoundError("not in the cache")
        raise _ConnectError("[Errno 101] Network is unreachable")  # the real client retries this for ~18 s

    def metadata(*args, **kwargs):
        raise _ConnectError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(hub, "hf_hub_download", download)
    monkeypatch.setattr(hub, "snapshot_download", download)
    monkeypatch.setattr(hub, "get_hf_file_metadata", metadata)
    return asked


def test_the_official_release_without_network_fails_fast_naming_the_downloads(no_network) -> None:
    with pytest.raises(FileNotFoundError) as info:
        Restorer.from_pretrained("EvanEternal/VARestorer")
    message = str(info.value)
    assert "\n" not in message and "hf download EvanEternal/VARestorer weights/varestorer.pth" in message
    assert "hf download google/flan-t5-xl" in message
    assert no_network and all(no_network), "a download went to the network after the Hub did not answer"
    with pytest.raises(FileNotFoundError, match=r"someone/model .*unreachable.* `hf download someone/model`"):
        Restorer.from_pretrained("someone/model")


@pytest.mark.slow
def test_restore_from_an_unreachable_hub_is_one_quick_line(tmp_path) -> None:
    with socket.socket() as sock:  # a closed port on this machine: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = subprocess_env() | {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    env.pop("HF_HUB_OFFLINE", None)
    (tmp_path / "in.png").write_bytes((Path(varestorer.__file__).parents[2] / "examples" / "chelsea.png").read_bytes())
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "varestorer", "restore", str(tmp_path / "in.png"), "-o", str(tmp_path / "o")]
        + ["--model", "EvanEternal/VARestorer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and time.perf_counter() - start < 30
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "hf download EvanEternal/VARestorer weights/varestorer.pth" in lines[0], run.stderr
