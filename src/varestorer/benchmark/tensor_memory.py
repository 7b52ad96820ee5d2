"""Peak memory of live tensors on any device: what CUDA's ``max_memory_allocated`` reports, also on a CPU.

A process's resident set (``benchmark/timing.py`` ``PeakMemory`` on a CPU) mixes tensors with the
allocator's retained pages and everything Python holds, and moves by megabytes on its own: too coarse
to check a memory model against a tiny preset. :class:`LiveTensorPeak` counts tensor storages
instead: every storage an ATen op returns (seen through a ``TorchDispatchMode``, which the autograd
engine's backward thread inherits) is added when it first appears and subtracted when it is freed
(a weak-reference callback on the storage), on top of the storages of the tensors it is told about
at entry (weights, optimiser states). On CUDA it reads the caching allocator's own counters.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorPeak(TorchDispatchMode):
    """``with LiveTensorPeak(existing=[...]) as peak: ...``; then ``peak.peak_bytes`` and ``peak.bytes``.

    Args:
        existing: tensors alive at entry (parameters, buffers, optimiser states) counted from the start.
    """

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._live: dict[int, int] = {}
        self._refs: dict[int, Any] = {}
        self.bytes = 0
        self.peak_bytes = 0
        for tensor in existing:
            self._track(tensor)

    def _release(self, key: int) -> None:
        self.bytes -= self._live.pop(key, 0)
        self._refs.pop(key, None)

    def _releaser(self, key: int) -> Callable[[Any], None]:
        return lambda _: self._release(key)

    def _track(self, tensor: torch.Tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._live:
            return
        size = storage.nbytes()
        self._live[key] = size
        self._refs[key] = weakref.ref(storage, self._releaser(key))
        self.bytes += size
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value)
        return out

    def reset_peak(self) -> None:
        """Start a new peak at the current live bytes."""
        self.peak_bytes = self.bytes


def module_tensors(*modules: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[torch.Tensor]:
    """Parameters, buffers, gradients and optimiser states: what is alive between steps."""
    tensors: list[torch.Tensor] = []
    for module in modules:
        tensors += list(module.parameters()) + list(module.buffers())
        tensors += [p.grad for p in module.parameters() if p.grad is not None]
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


def top_allocations_at_peak(snapshot: dict[str, Any], count: int = 15) -> list[dict[str, Any]]:
    """The largest allocation sites alive at the peak of a CUDA memory-history snapshot
    (``torch.cuda.memory._snapshot()`` after ``_record_memory_history``), grouped by the innermost
    varestorer frame (else the innermost frame): ``[{"site", "bytes", "count"}]``, largest first.

    Only allocations made while the history was recorded are seen (weights made before are not)."""
    events = [e for trace in snapshot.get("device_traces", []) for e in trace if e.get("action") in _ACTIONS]
    size: dict[int, int] = {}
    current = peak = peak_index = 0
    for index, event in enumerate(events):  # pass 1: where the peak is
        if event["action"] == "alloc":
            size[event["addr"]] = event["size"]
            current += event["size"]
        else:
            current -= size.pop(event["addr"], 0)
        if current > peak:
            peak, peak_index = current, index
    live: dict[int, dict[str, Any]] = {}
    for event in events[: peak_index + 1]:  # pass 2: what is alive there
        if event["action"] == "alloc":
            live[event["addr"]] = event
        else:
            live.pop(event["addr"], None)
    sites: dict[str, dict[str, Any]] = {}
    for event in live.values():
        frames = event.get("frames") or [{"filename": "?", "line": 0, "name": "?"}]
        frame = next((f for f in frames if "varestorer" in f["filename"]), frames[0])
        site = f"{frame['filename'].rsplit('/src/', 1)[-1]}:{frame['line']} {frame['name']}"
        entry = sites.setdefault(site, {"site": site, "bytes": 0, "count": 0})
        entry["bytes"] += event["size"]
        entry["count"] += 1
    return sorted(sites.values(), key=lambda s: -s["bytes"])[:count]


_ACTIONS = ("alloc", "free_completed")
