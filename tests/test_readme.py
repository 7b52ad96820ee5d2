"""The README's two newcomer commands: CI runs exactly the test command; the main job works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def _block(marker: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", text, re.S)
    assert match, f"README has no <!-- {marker} --> bash block"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _block("tests") in ci.splitlines()


def _main_job_args() -> list[str]:
    command = _block("main-job")
    # The install steps are exercised by CI itself; here run the job with this checkout's code.
    job = command.split("&&")[-1].strip()
    assert job.startswith(".venv/bin/varestorer ")
    return job.split()[1:]


def _small_examples(folder: Path, count: int, size: int = 24) -> set[str]:
    """Crops of ``count`` bundled examples, each small enough for one 64 px tile of the embedded model."""
    folder.mkdir()
    paths = sorted((ROOT / "examples").glob("*.png"), key=lambda p: p.name != "chelsea.png")[:count]
    for path in paths:
        with Image.open(path) as image:
            Image.fromarray(np.asarray(image.convert("RGB"))[:size, :size]).save(folder / path.name)
    return {p.stem for p in paths}


def test_main_job_command_on_small_crops(tmp_path, monkeypatch) -> None:
    """The README's main job, in process, on small crops of the examples (the full run is the slow test)."""
    from varestorer.cli.main import main

    args = _main_job_args()
    stems = _small_examples(tmp_path / "examples", count=1)
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    if args[0] == "restore":
        out = tmp_path / args[args.index("-o") + 1]
        assert {p.stem for p in out.iterdir()} == stems
        with Image.open(next(out.iterdir())) as restored:
            assert restored.size == (96, 96)


@pytest.mark.slow  # the embedded model on every full-size example on CPU: ~200 s on the 2-core box
@pytest.mark.timeout(1200)  # the default 300 s is too tight on a loaded box
def test_main_job_command_runs(tmp_path) -> None:
    command = _block("main-job")
    # The install steps are exercised by CI itself; here run the job with this checkout's code.
    job = command.split("&&")[-1].strip()
    assert job.startswith(".venv/bin/varestorer ")
    args = job.split()[1:]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    out = subprocess.run(
        [sys.executable, "-m", "varestorer", *args], cwd=tmp_path, capture_output=True, text=True, env=subprocess_env()
    )
    assert out.returncode == 0, out.stderr
    if args[0] == "restore":  # every bundled example was restored
        restored = {p.stem for p in (tmp_path / args[args.index("-o") + 1]).iterdir()}
        assert restored == {p.stem for p in (ROOT / "examples").glob("*.png")}


def _python_snippet() -> str:
    code = re.search(r"<!-- python -->\s*```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert code, "README has no <!-- python --> block"
    return code.group(1)


def test_python_snippet_on_a_small_crop(tmp_path, monkeypatch) -> None:
    """The README's Python snippet as written, on a small crop of its example photo (one tile)."""
    _small_examples(tmp_path / "examples", count=1)  # chelsea.png, the snippet's photo
    monkeypatch.chdir(tmp_path)
    exec(compile(_python_snippet(), "README.md", "exec"), {})
    (result,) = tmp_path.glob("*_x4.png")
    with Image.open(result) as restored:
        assert restored.size == (96, 96)


@pytest.mark.slow  # the embedded model on a full-size photo on CPU: ~25-45 s on the 2-core box
def test_python_snippet_runs(tmp_path, monkeypatch) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(_python_snippet(), "README.md", "exec"), {})
    assert list(tmp_path.glob("*_x4.png")), "the README snippet should write its result"
