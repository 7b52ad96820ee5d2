"""What the GPU scripts (``gpu_check.py``, ``gpu_official.py``) share: atomic JSON results, freeing memory
between runs, and the no-host-sync check. Plain functions over torch; imported from the scripts' folder."""

from __future__ import annotations

import gc
import json
import traceback
from collections.abc import Callable
from pathlib import Path

import torch


def write_json(out: Path, name: str, data: object) -> None:
    """``out/name.json``, written whole or not at all (a timeout mid-write keeps the previous file)."""
    tmp = out / f".{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / f"{name}.json")


def free_memory() -> None:
    """Drop what the last run left (Python garbage, then the CUDA caching allocator's free blocks)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def count_host_syncs(run: Callable[[], object], *, trace_lines: int = 8) -> dict[str, object]:
    """Call ``run`` once to warm up (first calls may synchronise while allocating), then once under CUDA's
    sync debug mode set to error, where any host sync raises: ``{"checked": True, "host_syncs": 0}`` or the
    error's first line and the last ``trace_lines`` lines of its traceback."""
    result: dict[str, object] = {"checked": True}
    run()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
        result["host_syncs"] = 0
    except RuntimeError as error:
        result["host_syncs"] = "at least 1"
        result["error"] = str(error).splitlines()[0]
        result["where"] = traceback.format_exc().splitlines()[-trace_lines:]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return result
