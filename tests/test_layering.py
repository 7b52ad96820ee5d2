"""The import DAG of STYLE.md §9: model code never imports training, data, metrics or CLI code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "varestorer"

MODEL_SIDE = {
    "varestorer.config",
    "varestorer.checkpoint",
    "varestorer.nn",
    "varestorer.io",
    "varestorer.tokenizer",
    "varestorer.transformer",
    "varestorer.archs",
}
# package prefix -> prefixes it may import inside varestorer (itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "varestorer.config": set(),
    "varestorer.io": {"varestorer.config"},
    "varestorer.checkpoint": {"varestorer.config", "varestorer.io", "varestorer"},
    "varestorer.nn": {"varestorer.config", "varestorer.checkpoint"},
    "varestorer.tokenizer": {"varestorer.config", "varestorer.checkpoint", "varestorer.nn", "varestorer.io"},
    "varestorer.transformer": MODEL_SIDE - {"varestorer.archs"},
    "varestorer.archs": {"varestorer.config", "varestorer.checkpoint", "varestorer.nn", "varestorer.io"},
    "varestorer.degradation": {"varestorer.config", "varestorer.io"},
    "varestorer.assets": {"varestorer.config", "varestorer.io", "varestorer.checkpoint", "varestorer.archs"},
    "varestorer.models": MODEL_SIDE | {"varestorer.inference.sampler"},
    "varestorer.inference.sampler": MODEL_SIDE,
    "varestorer.inference.tiling": set(),
    "varestorer.inference": MODEL_SIDE | {"varestorer.models", "varestorer.inference"},
    "varestorer.data": {"varestorer.config", "varestorer.io", "varestorer.degradation"},
    "varestorer.metrics": {
        "varestorer.config",
        "varestorer.io",
        "varestorer.assets",
        "varestorer.data",
        "varestorer.checkpoint",
    },
}
# Layers 4-5 may import anything except the CLI/demo (training, benchmark) or anything (cli, demo).
TOP = {"varestorer.training", "varestorer.benchmark"}
NO_DISTRIBUTED = MODEL_SIDE | {
    "varestorer.models",
    "varestorer.inference",
    "varestorer.degradation",
    "varestorer.metrics",
    "varestorer.data",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = _module_name(path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # resolve relative imports
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                names.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.append(node.module)
    return names


def _rule(module: str) -> str | None:
    matches = [
        p for p in [*ALLOWED, *TOP, "varestorer.cli", "varestorer.demo"] if module == p or module.startswith(p + ".")
    ]
    return max(matches, key=len) if matches else None


def _within(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layering(path: Path) -> None:
    module = _module_name(path)
    rule = _rule(module)
    if module == "varestorer" or module == "varestorer.__main__":
        return
    assert rule is not None, f"{module} is in no layer: add its package to tests/test_layering.py"
    for name in _imports(path):
        if name.startswith("torch.distributed") and rule in NO_DISTRIBUTED:
            pytest.fail(f"{module} imports {name}: only training code may touch torch.distributed")
        if not (name == "varestorer" or name.startswith("varestorer.")):
            continue
        if rule in ("varestorer.cli", "varestorer.demo"):
            continue
        if rule in TOP:
            assert not _within(name, {"varestorer.cli", "varestorer.demo"}), f"{module} imports {name}"
            continue
        allowed = ALLOWED[rule] | {rule}
        assert _within(name, allowed) or name == "varestorer" and "varestorer" in allowed, (
            f"{module} (layer {rule}) imports {name}; allowed: {sorted(allowed)}"
        )


def test_every_package_has_a_rule() -> None:
    packages = {_module_name(p) for p in SRC.rglob("__init__.py")} - {"varestorer"}
    assert all(_rule(p) for p in packages), [p for p in packages if not _rule(p)]


def test_import_varestorer_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, varestorer; heavy = [m for m in ('torch', 'varestorer.training', 'varestorer.metrics',"
        " 'varestorer.cli.main') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC.parent), "PATH": ""},
    )
    assert out.stdout.strip() == "[]"
