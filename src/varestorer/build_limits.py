"""Building a model from a ``config.json`` within the memory its weights justify.

A config.json is data from anywhere: ``num_conv: 10000`` or ``width: 1000000`` would allocate until
the machine runs out of memory (and the kernel kills some process, maybe another one). So while a model
is built, every tensor it asks for is counted before it is allocated, and the build stops at the first
one that would take the total past what the weights beside the config can fill, or past the free memory.
(A dry run on the meta device would do too, but torch.eye there imports torch._dynamo: seconds per load.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode

from varestorer.io.atomic import format_bytes

N = TypeVar("N")

_WEIGHTS_SLACK = 64 * 2**20  # bytes: tensors a checkpoint may leave out (non-persistent buffers, tied copies)


class _TooLargeError(Exception):
    """Raised by :class:`_AllocationBudget` to stop a build before the tensor that would not fit."""


def available_memory() -> int | None:
    """Bytes of memory this machine can give without swapping (``MemAvailable``), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _shape_elements(size: Any) -> int | None:
    """Elements of a ``torch.empty``-style size: ints, one tuple/list/Size of ints, or None if not a size."""
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    if not size or not all(isinstance(d, int) and not isinstance(d, bool) for d in size):
        return None if size else 1
    count = 1
    for d in size:
        count *= max(d, 0)
    return count


def _requested_elements(func: Any, args: tuple, kwargs: dict) -> int | None:
    """Elements a tensor factory call will allocate, from its arguments (None: not a factory we size)."""
    name = getattr(func, "__name__", "")
    if "size" in kwargs and isinstance(kwargs["size"], (tuple, list, torch.Size)):
        return _shape_elements((kwargs["size"],))
    if name in ("empty", "zeros", "ones", "rand", "randn"):
        return _shape_elements(args)
    if name == "full" and args:
        return _shape_elements(args[:1])
    if name == "randint" and args:
        return _shape_elements(args[-1:])
    if name == "empty_strided" and args:
        return _shape_elements(args[:1])
    if name == "eye" and args and all(isinstance(a, int) for a in args[:2]):
        return args[0] * (args[1] if len(args) > 1 else args[0])
    if name in ("arange", "linspace", "logspace") and args and all(isinstance(a, (int, float)) for a in args):
        if name != "arange":
            return int(args[2]) if len(args) > 2 else None
        start, end, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) > 2 else 1)
        return max(int((end - start) / step) + 1, 0) if step else None
    return None


class _AllocationBudget(TorchFunctionMode):
    """Counts the bytes of tensors created by factory functions (``torch.empty``, ``zeros``, ``eye``...)
    and raises :class:`_TooLargeError` before the call that would pass ``limit``."""

    def __init__(self, limit: int, message: Callable[[int], str]) -> None:
        super().__init__()
        self.limit, self.message, self.total = limit, message, 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        elements = _requested_elements(func, args, kwargs)
        if elements is not None:
            dtype = kwargs.get("dtype") or torch.get_default_dtype()
            itemsize = dtype.itemsize if isinstance(dtype, torch.dtype) else 4
            self.total += elements * itemsize
            if self.total > self.limit:
                raise _TooLargeError(self.message(self.total))
        return func(*args, **kwargs)


def build_within_limits(build: Callable[[], N], where: str | Path, *, state: Mapping[str, Any] | None) -> N:
    """``build()``, stopped before the tensor that would take it past its weights or the free memory.

    Args:
        build: makes the module from a config (e.g. ``lambda: cls(config)``).
        where: the checkpoint, for the message.
        state: the tensors that will be loaded into the whole model (None: only part of it, e.g. adapters);
            the model may take at most twice their bytes (float16 stored, float32 built) plus 64 MB.

    Raises:
        ValueError: one line, before the allocation that would pass the limit.
    """
    memory = available_memory()
    stored = None if state is None else sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))
    limits = [limit for limit in (memory, None if stored is None else 2 * stored + _WEIGHTS_SLACK) if limit]
    if not limits:
        return build()
    limit = min(limits)

    def message(total: int) -> str:
        if stored is not None and limit < (memory or limit + 1):
            return (
                f"{where}: its config.json describes a model of more than {format_bytes(total)}, but its weights hold "
                f"{format_bytes(stored)}; config.json does not belong to these weights (refused before allocating)"
            )
        return (
            f"{where}: its config.json describes a model of more than {format_bytes(total)}, above the "
            f"{format_bytes(memory or 0)} of free memory (refused before allocating)"
        )

    try:
        with _AllocationBudget(limit, message):
            return build()
    except _TooLargeError as error:
        raise ValueError(str(error)) from None
    except RecursionError:
        raise ValueError(f"{where}: its config.json nests too deeply to build") from None
