"""Check a requested torch device up front, so a wrong ``--device`` is one clear line, not a traceback."""

from __future__ import annotations

import torch


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine.

    Raises:
        ValueError: an unknown device name, CUDA on a CPU build or a machine without a GPU, a GPU
            index beyond the ones present, or MPS where it is not available.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        first = (str(error).splitlines() or [""])[0]
        raise ValueError(f"unknown device {device!r} ({first}); use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r} requested but only {count} CUDA device(s) exist")
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(device)!r} requested but Apple MPS is not available; use --device cpu")
    return resolved
