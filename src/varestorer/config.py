"""Typed, frozen configuration dataclasses and their strict (de)serialisation.

Every model and job is configured by a frozen dataclass that travels with the weights as
``config.json``. Each concept keeps its dataclass next to it (``tokenizer/config.py``,
``transformer/config.py``, ...); this module holds what they share: strict conversion from
plain dicts (unknown keys are errors, nested dataclasses and tuples rebuilt), JSON and TOML files.
It imports nothing from the rest of the package.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]`` (a preset or other named entry), or a one-line ``ValueError`` that names ``what``
    (``"tokenizer preset"``) and lists the names."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(table)}")
    return table[name]


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _convert(annotation: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        return None
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table/object for {annotation.__name__}, got {value!r}")
        return config_from_dict(annotation, value, where=where)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, where)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        return [_convert(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise ValueError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], *, where: str | None = None) -> T:
    """Build the dataclass ``cls`` from a plain dict; unknown keys and wrong types raise ``ValueError``."""
    where = where or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    module = sys.modules[cls.__module__]
    hints = typing.get_type_hints(cls, vars(module))
    kwargs = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _parse(text: str, suffix: str) -> dict[str, Any]:
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        return tomllib.loads(text)
    if suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object at the top level")
        return data
    raise ValueError(f"unsupported config format {suffix!r}; use .toml or .json")


def read_config_tables(path: str | Path, *, section: str | None = None, what: str = "config file") -> Any:
    """The top-level table of a ``.toml`` or ``.json`` file, or its table ``section``.

    Raises:
        FileNotFoundError: ``{what} not found: {path}``.
        ValueError: one line starting with the path (a syntax error, another format, no such section).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = _parse(text, path.suffix)
    except ValueError as error:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"{path}: {error}") from None
    if section is not None:
        if section not in data:
            raise ValueError(f"{path}: no [{section}] section")
        return data[section]
    return data


def load_config_file(cls: type[T], path: str | Path, *, section: str | None = None) -> T:
    """Read a ``.json`` or ``.toml`` file (optionally one top-level ``section``) into ``cls``."""
    data = read_config_tables(path, section=section)
    return config_from_dict(cls, data, where=f"{Path(path).name}" + (f"[{section}]" if section else ""))
