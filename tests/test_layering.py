"""The import DAG: model code never imports training, data, metrics or CLI code,
each layer imports only the layers below it, and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "varestorer"

# The layer order, bottom up (a package may import only the packages listed for it, and itself):
#   0  config, io, restore_spec         plain data (restore_spec: the restore contract), files
#   1  storage, build_limits, checkpoint, families  weights on disk (storage: float casts, int8; build_limits:
#                                    sizes from config.json); the registry of families
#   2  nn                               shared layers (attention, LoRA)
#   3  tokenizer                        images <-> multi-scale token pyramids (tokenizer folders via families)
#   4  transformer                      the next-scale transformer and its sampler (transformer/sampler.py)
#   5  archs                            peer architectures: pure modules
#   6  models                           teacher, student, ablation, pre-cleaner: compositions of 3-5
#   7  foreign                          reading other projects' weight files (.pth, ncnn) into 5-6
#   8  inference                        the Restorer (tiling, colour fix) around any restorable model
#   -  degradation, data, metrics, assets   data side, beside the model side
#   9  training, benchmark; 10 cli, demo
BASE = {"varestorer.config", "varestorer.io", "varestorer.restore_spec"}
MODEL_SIDE = BASE | {
    "varestorer.storage",
    "varestorer.build_limits",
    "varestorer.checkpoint",
    "varestorer.families",
    "varestorer.nn",
    "varestorer.tokenizer",
    "varestorer.transformer",
    "varestorer.archs",
    "varestorer.models",
    "varestorer.foreign",
}
# package prefix -> prefixes it may import inside varestorer (itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "varestorer.config": set(),
    "varestorer.restore_spec": set(),
    "varestorer.io": {"varestorer.config"},
    "varestorer.storage": BASE,
    "varestorer.build_limits": BASE,
    "varestorer.checkpoint": BASE | {"varestorer", "varestorer.storage", "varestorer.build_limits"},
    "varestorer.families": BASE | {"varestorer.checkpoint"},
    "varestorer.nn": BASE | {"varestorer.checkpoint"},
    # tokenizer/loading.py opens a tokenizer folder of any family (a teacher's tokenizer/) through the registry.
    "varestorer.tokenizer": BASE | {"varestorer.checkpoint", "varestorer.families", "varestorer.nn"},
    "varestorer.transformer": BASE | {"varestorer.checkpoint", "varestorer.nn", "varestorer.tokenizer"},
    "varestorer.archs": BASE | {"varestorer.checkpoint", "varestorer.nn"},
    "varestorer.models": MODEL_SIDE - {"varestorer.foreign", "varestorer.families"},
    "varestorer.foreign": MODEL_SIDE,
    "varestorer.inference.tiling": set(),
    "varestorer.inference": MODEL_SIDE | {"varestorer.inference"},
    "varestorer.degradation": BASE,
    "varestorer.assets": BASE | {"varestorer.checkpoint", "varestorer.archs", "varestorer.foreign"},
    "varestorer.data": BASE | {"varestorer.degradation"},
    "varestorer.metrics": BASE | {"varestorer.assets", "varestorer.data", "varestorer.checkpoint"},
}
# Layers 4-5 may import anything except the CLI/demo (training, benchmark) or anything (cli, demo).
TOP = {"varestorer.training", "varestorer.benchmark"}
NO_DISTRIBUTED = MODEL_SIDE | {
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


def _module_graph() -> dict[str, set[str]]:
    """Module -> the varestorer modules it imports (top-level and deferred imports alike)."""
    modules = {_module_name(p): p for p in FILES}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            if imported in modules:
                targets.add(imported)
            elif imported.rsplit(".", 1)[0] in modules:  # "from package import name": the package
                targets.add(imported.rsplit(".", 1)[0])
        graph[name] = targets - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_anywhere() -> None:
    cycle = _cycle(_module_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_circle_check_can_fail() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
