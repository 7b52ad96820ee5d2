"""Resumable training checkpoints: atomic folders, a ``latest`` pointer, pruning, RNG capture.

Layout under ``<output_dir>/checkpoints/``::

    step_00001000/
        trainable.safetensors   trainable parameters and buffers of the training module
        ema.safetensors         EMA shadow weights (when EMA is on)
        state.pt                step, optimiser, GradScaler, RNG states, config (torch file, weights_only)
        model/                  the job's export (e.g. a ``from_pretrained`` folder), optional
    latest                      text file naming the newest complete checkpoint folder

Each folder is written into a temporary sibling and renamed into place, and ``latest`` is replaced
atomically after that, so a crash at any point leaves the previous checkpoint intact and pointed to.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from varestorer.checkpoint import load_error_reason
from varestorer.io.atomic import DiskFullError, atomic_directory, atomic_path, disk_full_error, is_disk_full

logger = logging.getLogger(__name__)

LATEST = "latest"
STATE_NAME = "state.pt"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def capture_rng() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python RNG states as tensors/ints/lists (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]  # a 5-tuple
    assert not isinstance(keys, str)
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)}
        | {"has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))


def _cpu_copy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # A fresh contiguous CPU copy per tensor: safetensors refuses shared storage (tied weights).
    return {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in tensors.items()}


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def find_latest(root: str | Path) -> Path | None:
    """The folder named by ``latest``, or the newest complete folder when the pointer is missing/stale."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text(encoding="utf-8").strip()
        if _STEP_DIR.match(target.name) and (target / STATE_NAME).is_file():
            return target
        logger.warning("%s names %s, which is not a complete checkpoint; using the newest folder", pointer, target)
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(
    root: str | Path,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    *,
    export: Callable[[Path], None] | None = None,
    keep_last: int = 0,
) -> Path:
    """Write ``root/step_XXXXXXXX`` atomically, point ``latest`` at it and prune old folders.

    Args:
        tensors: file stem -> tensors, each written as ``<stem>.safetensors``.
        state: plain data and tensors for ``state.pt`` (must load with ``weights_only=True``).
        export: called with ``<folder>/model`` (not yet existing) to write an exported model.
        keep_last: keep this many newest folders (0 keeps all).
    """
    root = Path(root)
    name = checkpoint_name(step)
    try:
        with atomic_directory(root / name, overwrite=True) as tmp:
            try:
                for stem, group in tensors.items():
                    save_file(_cpu_copy(group), str(tmp / f"{stem}.safetensors"), metadata={"format": "pt"})
                torch.save(state, tmp / STATE_NAME)
                if export is not None:
                    export(tmp / "model")
            except Exception as error:  # judged while the partial folder still fills the disk
                if is_disk_full(error, tmp):
                    raise _disk_full(root, name) from None
                raise
        with atomic_path(root / LATEST, overwrite=True) as tmp_pointer:
            tmp_pointer.write_text(name + "\n", encoding="utf-8")
    except OSError as error:
        if isinstance(error, DiskFullError) or not is_disk_full(error, root):
            raise
        raise _disk_full(root, name) from None
    if keep_last > 0:
        for old in list_checkpoints(root)[:-keep_last]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return root / name


def _disk_full(root: Path, name: str) -> DiskFullError:
    """Disk full while writing checkpoint ``name``: the previous checkpoint and ``latest`` are untouched."""
    previous = find_latest(root)
    kept = f"{previous.name} is intact" if previous is not None else "no earlier checkpoint"
    return disk_full_error(root, f"checkpoint {name}", f"{kept}; free some space, then run again with --resume")


def load_checkpoint(folder: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Read a checkpoint folder: ({stem: tensors}, state). ``state.pt`` is loaded with weights_only."""
    folder = Path(folder)
    state_path = folder / STATE_NAME
    if not state_path.is_file():
        raise FileNotFoundError(f"not a training checkpoint (no {STATE_NAME}): {folder}")
    try:
        with warnings.catch_warnings():  # a refusal is reported as one line below
            warnings.filterwarnings("ignore", message=".*pickle protocol.*", category=UserWarning)
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        tensors = {p.name.removesuffix(".safetensors"): load_file(str(p)) for p in folder.glob("*.safetensors")}
    except Exception as error:  # unpickling refusals, truncated files, safetensors header errors
        raise ValueError(f"{folder}: unreadable checkpoint ({load_error_reason(error)})") from None
    return tensors, state


def load_checkpoint_or_older(folder: str | Path) -> tuple[Path, dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """:func:`load_checkpoint` of ``folder``, else of the newest older complete checkpoint beside it that
    reads (a crash or a bad disk can corrupt the latest one): (folder read, tensors, state). Each
    unreadable folder is skipped with a warning.

    Raises:
        ValueError: neither ``folder`` nor any older checkpoint is readable.
    """
    folder = Path(folder)
    match = _STEP_DIR.match(folder.name)
    step = int(match.group(1)) if match else None
    older = [p for p in reversed(list_checkpoints(folder.parent)) if step is not None and _step(p) < step]
    first_error: ValueError | None = None
    for candidate in [folder, *older]:
        try:
            tensors, state = load_checkpoint(candidate)
        except (ValueError, FileNotFoundError) as error:
            first_error = first_error or ValueError(str(error))
            logger.warning("%s; trying the previous checkpoint", error)
            continue
        if candidate != folder:
            logger.warning("resuming from %s: %s is unreadable", candidate.name, folder.name)
        return candidate, tensors, state
    assert first_error is not None
    raise ValueError(f"{first_error}; no older checkpoint under {folder.parent} is readable either")


def _step(folder: Path) -> int:
    return int(_STEP_DIR.match(folder.name).group(1))  # type: ignore[union-attr]
