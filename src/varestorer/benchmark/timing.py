"""Device-synchronised timing, peak memory, reduced-precision contexts and FLOP counting.

Wall time is the median of N runs, each bracketed by a device synchronisation. On a CPU the process
CPU time of each run is kept as well: on a shared machine the wall time grows with the load, the
CPU time much less (an idle machine's wall time is roughly CPU time / threads).
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

Dtype = Literal["fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    """Wait for every queued kernel on ``device`` (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Median wall and process-CPU milliseconds over the timed runs, and every wall time."""

    ms: float
    cpu_ms: float
    runs_ms: tuple[float, ...]


def measure(fn: Callable[[], Any], device: torch.device, *, warmup: int = 1, runs: int = 3) -> Timing:
    """Call ``fn`` ``warmup`` times, then time ``runs`` calls, each between two device synchronisations."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got {runs} and {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    walls, cpus = [], []
    for _ in range(runs):
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        walls.append((time.perf_counter() - start) * 1000)
        cpus.append((time.process_time() - cpu_start) * 1000)
    return Timing(statistics.median(walls), statistics.median(cpus), tuple(walls))


def precision(device: torch.device, dtype: Dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (``fp32``: no autocast)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


# ------------------------------------------------------------------------------------------ memory
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``); False where unavailable.

    Without it, memory freed by earlier runs stays resident, the block reuses it, and the RSS peak
    does not rise at all: the shipped model's bench read "peak memory 0 MB" on a CPU.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        return False
    if trim is None:
        return False
    trim(0)
    return True


class PeakMemory:
    """Peak memory of a block: CUDA ``max_memory_allocated`` above the allocation at entry, or on a
    CPU the rise of the process's resident-set high-water mark above the RSS at entry. On the CPU
    the C heap's free pages are first returned to the OS (glibc ``malloc_trim``), so the block's
    allocations show as RSS growth even after earlier runs; the high-water mark is reset through
    ``/proc/self/clear_refs`` where the kernel allows it, else ``ru_maxrss`` is used (an upper bound).
    The CPU figure is the block's working set at its peak (tensors plus allocator and library
    overhead), within a few MB from run to run.

    Attributes after the block: ``mb`` (float) and ``kind`` (what was measured).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb = 0.0
        self.kind = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._trimmed = _release_free_heap()
        self._start = _status_kb("VmRSS") or 0
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self._hwm = True
        except OSError:
            self._hwm = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
            self.kind = "cuda max_memory_allocated above the weights"
            return
        peak_kb = _status_kb("VmHWM") if self._hwm else None
        if peak_kb is None:
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.kind = "process ru_maxrss minus RSS at start (upper bound)"
        else:
            self.kind = "process peak RSS (VmHWM) minus RSS at start"
        if self._trimmed:
            self.kind += ", free heap released first"
        self.mb = max(0, peak_kb - self._start) / 1024


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    with PeakMemory(device) as peak:
        yield peak


# ------------------------------------------------------------------------------------------- flops
def _sdpa_shapes(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _custom_flops() -> dict[Any, Any]:
    """Kernels PyTorch's counter does not know: the CPU flash attention (same count as the GPU ones)."""
    table = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        table[cpu_flash] = _sdpa_shapes
    return table


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (2 per multiply-add) of matmuls, convolutions and attention in one call of ``fn``,
    counted by ``torch.utils.flop_counter.FlopCounterMode`` (element-wise ops are not counted)."""
    with FlopCounterMode(display=False, custom_mapping=_custom_flops()) as counter:
        fn()
    return int(counter.get_total_flops())
