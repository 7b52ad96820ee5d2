from __future__ import annotations

import subprocess
import sys

from varestorer import __version__
from varestorer.cli.main import COMMANDS, main


def test_help_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name} " in out


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"varestorer {__version__}"


def test_unknown_command_is_one_line_error(capsys) -> None:
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'" in err and err.count("\n") == 1


def test_every_command_module_has_the_interface() -> None:
    import importlib

    for name, (module_name, _) in COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name


def test_python_dash_m_entry_point() -> None:
    from conftest import subprocess_env

    out = subprocess.run(
        [sys.executable, "-m", "varestorer", "--version"], capture_output=True, text=True, env=subprocess_env()
    )
    assert out.returncode == 0 and __version__ in out.stdout
