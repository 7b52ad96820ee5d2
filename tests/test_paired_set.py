"""``data/paired_set.py``: the library behind ``varestorer degrade``, called from Python."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from varestorer.cli.main import main
from varestorer.data.paired_set import build_paired_set, plan_paired_set, write_paired_set
from varestorer.degradation.config import DEGRADATION_PRESETS


class Recorder:
    def __init__(self, total: int) -> None:
        self.total, self.events = total, []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start(self, name: str) -> None:
        self.events.append(("start", name))

    def finish(self, status: str) -> None:
        self.events.append(("finish", status))

    def write(self, message: str) -> None:
        self.events.append(("write", message.split(":")[0]))


def test_a_config_object_gives_the_cli_pairs_and_reports_progress(tmp_path, tiny_image) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.fromarray(tiny_image(24, 28)).save(source / "a.png")
    (source / "b.jpg").write_bytes(b"\xff\xd8 broken")
    assert main(["degrade", str(source), "-o", str(tmp_path / "cli"), "--preset", "mild", "--crop", "16", "-q"]) == 1
    recorders: list[Recorder] = []

    def progress(total: int) -> Recorder:
        recorders.append(Recorder(total))
        return recorders[-1]

    config = DEGRADATION_PRESETS["mild"]
    manifest = build_paired_set([source], tmp_path / "lib", degradation=config, crop=16, progress=progress)
    for kind in ("gt", "lq"):
        assert (tmp_path / "lib" / kind / "a.png").read_bytes() == (tmp_path / "cli" / kind / "a.png").read_bytes()
    cli = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert manifest == json.loads((tmp_path / "lib" / "manifest.json").read_text())
    assert manifest["images"] == cli["images"] and manifest["preset"] is None and cli["preset"] == "mild"
    assert list(manifest["failed"]) == [str(source / "b.jpg")]
    assert recorders[0].total == 2 and recorders[0].events == [
        ("start", "a"),
        ("finish", "wrote"),
        ("start", "b"),
        ("write", "FAILED " + str(source / "b.jpg")),
        ("finish", "failed"),
    ]


def test_the_plan_checks_settings_before_anything_is_written(tmp_path, tiny_image) -> None:
    Image.fromarray(tiny_image(24, 28)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="multiple of the scale 4"):
        plan_paired_set([tmp_path / "a.png"], crop=18)
    with pytest.raises(ValueError, match="per_image > 1"):
        plan_paired_set([tmp_path / "a.png"], crop=16, per_image=2)
    plan = plan_paired_set([tmp_path / "a.png"], degradation="bicubic", scale=2, crop=None)
    assert plan.config.scale == 2 and plan.jobs == ((tmp_path / "a.png", "a"),)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="pass overwrite"):
        write_paired_set(plan, out)
    with pytest.raises(ValueError, match="contains input images"):
        write_paired_set(plan, tmp_path, overwrite=True)
    manifest = write_paired_set(plan, out, overwrite=True)
    assert not (out / "keep.txt").exists() and manifest["images"]["a"]["lq_size"] == [12, 14]
