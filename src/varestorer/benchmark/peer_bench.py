"""``varestorer bench --peers A,B`` without ``--model``: the peer restorers alone, on one random LQ batch.

The same per-peer measurement as beside a student (:func:`varestorer.benchmark.bench.bench_peer`: the module
``varestorer baseline`` runs, median of ``runs`` after ``warmup``), for timing the peers without paying for a
restorer's stages. Result keys: ``peers`` (as in ``run_bench``), ``device``, ``torch``, ``dtype``, ``size``,
``lq_size``, ``batch_size``, ``threads``, ``load_avg``, ``runs``, ``warmup``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from varestorer.benchmark.bench import bench_peer, device_name, load_average, peer_names
from varestorer.benchmark.timing import DTYPES, Dtype
from varestorer.inference.devices import check_device


def run_peer_bench(
    peers: list[str],
    *,
    size: int = 256,
    device: str | torch.device = "cpu",
    dtype: Dtype = "fp32",
    batch_size: int = 1,
    runs: int = 3,
    warmup: int = 1,
    seed: int = 0,
    peer_weights: Mapping[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Time each peer x4 restorer on a ``size // 4`` px LQ batch (``peer_weights``: name -> weights file)."""
    peer_weights = dict(peer_weights or {})
    names = peer_names(peers, peer_weights)
    if not names:
        raise ValueError("no peers to time")
    if batch_size < 1 or size < 4 or size % 4:
        raise ValueError(f"need batch size >= 1 and a size that is a multiple of 4, got {batch_size} and {size}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    device = check_device(device)
    load_before = load_average()
    generator = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch_size, 3, size // 4, size // 4, generator=generator).to(device)
    results = {
        name: bench_peer(name, lq, dtype=dtype, warmup=warmup, runs=runs, weights=peer_weights.get(name))
        for name in names
    }
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "dtype": dtype,
        "size": size,
        "lq_size": size // 4,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "load_avg": {"before": load_before, "after": load_average()},
        "runs": runs,
        "warmup": warmup,
        "peers": results,
    }


def format_peer_table(result: dict[str, Any]) -> str:
    """A plain-text table of one :func:`run_peer_bench` result."""
    r = result
    lines = [
        f"peers alone  {r['size']}px (LQ {r['lq_size']}px)  batch {r['batch_size']}  {r['dtype']}",
        f"device {r['device']}  torch {r['torch']}  threads {r['threads']}  load {r['load_avg']['before']}",
        "",
        f"{'peer':<22}{'ms':>10}{'cpu ms':>10}{'GFLOP/img':>11}{'GFLOP/s':>9}{'per cpu s':>10}  weights",
    ]
    for name, p in r["peers"].items():
        cpu_rate = p.get("cpu_gflop_per_s")
        lines.append(
            f"{name:<22}{p['ms']:>10.1f}{p['cpu_ms']:>10.1f}{p['gflops']:>11.1f}{p['gflop_per_s']:>9.0f}"
            f"{'-' if cpu_rate is None else f'{cpu_rate:.0f}':>10}  {p['weights']}"
        )
    return "\n".join(lines)
