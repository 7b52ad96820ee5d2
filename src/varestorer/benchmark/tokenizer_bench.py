"""``varestorer bench --tokenizer A,B,...``: encode + quantise and decode of tokenizers, side by side in one run.

Each target is anything ``varestorer reconstruct --model`` takes (an embedded name such as
``default-tokenizer`` or ``default``, a tokenizer, teacher or student folder) or a tokenizer preset
``FAMILY:NAME`` of an ``is_tokenizer`` family in ``varestorer.families`` (random weights: speed does not
depend on the values). Every target runs on the same random image of ``size`` x ``size`` px, interleaved
in one process, so their times compare on a machine whose speed drifts.
"""

from __future__ import annotations

from typing import Any

import torch

from varestorer.benchmark.bench import _measured, device_name
from varestorer.benchmark.timing import Dtype, precision
from varestorer.families import families, family_named
from varestorer.inference.reconstruction import find_tokenizer


def tokenizer_target(target: str, device: torch.device) -> tuple[Any, str]:
    """(tokenizer in eval mode on ``device``, where it came from) for one ``--tokenizer`` target.

    Raises:
        ValueError: a ``FAMILY:NAME`` that is not a tokenizer preset.
    """
    family_name, _, preset = target.partition(":")
    if preset and ":" not in preset:
        try:
            model_type, entry = family_named(family_name)
        except ValueError:
            entry = None
        if entry is not None:
            if not entry.is_tokenizer:
                tokenizers = ", ".join(f.name for f in families(is_tokenizer=True).values())
                raise ValueError(f"{target}: {family_name} is not a tokenizer family ({tokenizers})")
            presets = entry.preset_table()
            if preset not in presets:
                raise ValueError(f"unknown {family_name} preset {preset!r}; choose from {', '.join(presets)}")
            with torch.device(device):
                model = entry.model_class()(presets[preset])
            return model.eval(), f"{target} ({model_type}, random weights)"
    loaded = find_tokenizer(target, device=device)
    return loaded.tokenizer.eval(), loaded.where


def run_tokenizer_bench(
    targets: list[str],
    *,
    size: int = 256,
    device: str | torch.device = "cpu",
    dtype: Dtype = "fp32",
    batch_size: int = 1,
    warmup: int = 1,
    runs: int = 3,
) -> dict[str, Any]:
    """Median latency, FLOPs and GFLOP/s of ``encode + quantise`` and ``decode`` for each target.

    Returns:
        ``{"device", "size", "dtype", "batch_size", "tokenizers": [{"target", "where", "params_m",
        "tokens", "stages": {"encode_quantize"|"decode"|"total": {"ms", "cpu_ms", "gflops", ...}}}]}``.
    """
    if not targets:
        raise ValueError("--tokenizer needs at least one target")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    x_B3HW = (torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1).to(device)
    results = []
    for target in targets:
        tokenizer, where = tokenizer_target(target, device)
        if size % tokenizer.stride:
            raise ValueError(f"--size {size} is not a multiple of {target}'s stride {tokenizer.stride}")
        schedule = tokenizer.default_schedule(size, size)

        @torch.inference_mode()
        def encode(tokenizer: Any = tokenizer, schedule: Any = schedule) -> Any:
            with precision(device, dtype):
                return tokenizer.tokenize(x_B3HW, schedule)

        f_hat = encode().f_hat

        @torch.inference_mode()
        def decode(tokenizer: Any = tokenizer, f_hat: torch.Tensor = f_hat) -> Any:
            with precision(device, dtype):
                return tokenizer.decode(f_hat)

        stages: dict[str, dict[str, Any]] = {}
        for name, fn in (("encode_quantize", encode), ("decode", decode)):
            timing, flops, peak_mb = _measured(fn, device, warmup, runs)
            stages[name] = {
                "ms": timing.ms,
                "cpu_ms": timing.cpu_ms,
                "gflops": flops / 1e9 / batch_size,
                "gflop_per_s": flops / 1e9 / (timing.ms / 1000) if timing.ms > 0 else None,
                "peak_mb": peak_mb,
            }
        stages["total"] = {
            "ms": stages["encode_quantize"]["ms"] + stages["decode"]["ms"],
            "cpu_ms": stages["encode_quantize"]["cpu_ms"] + stages["decode"]["cpu_ms"],
            "gflops": stages["encode_quantize"]["gflops"] + stages["decode"]["gflops"],
        }
        results.append(
            {
                "target": target,
                "where": where,
                "model_type": type(tokenizer).__name__,
                "params_m": sum(p.numel() for p in tokenizer.parameters()) / 1e6,
                "stride": tokenizer.stride,
                "tokens": sum(h * w for h, w in schedule),
                "scales": len(schedule),
                "stages": stages,
            }
        )
    return {
        "device": device_name(device),
        "size": size,
        "dtype": dtype,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "tokenizers": results,
    }


def format_tokenizer_table(result: dict[str, Any]) -> str:
    """The result as a plain-text table, one row per tokenizer."""
    lines = [
        f"tokenizers at {result['size']} px, batch {result['batch_size']}, {result['dtype']}, "
        f"{result['device']} (median wall ms; GFLOP per image)",
        f"{'target':<28} {'type':<20} {'params':>7} {'tokens':>6} {'enc+quant':>10} {'decode':>8} {'total':>8} "
        f"{'GFLOP':>7}",
    ]
    for row in result["tokenizers"]:
        stages = row["stages"]
        lines.append(
            f"{row['target']:<28} {row['model_type']:<20} {row['params_m']:>6.2f}M {row['tokens']:>6} "
            f"{stages['encode_quantize']['ms']:>10.1f} {stages['decode']['ms']:>8.1f} {stages['total']['ms']:>8.1f} "
            f"{stages['total']['gflops']:>7.1f}"
        )
    return "\n".join(lines)
