"""The README's two newcomer commands: CI runs exactly the test command; the main job works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_python_snippet_runs(tmp_path, monkeypatch) -> None:
    code = re.search(r"<!-- python -->\s*```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert code, "README has no <!-- python --> block"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md", "exec"), {})
    assert list(tmp_path.glob("*_x4.png")), "the README snippet should write its result"
