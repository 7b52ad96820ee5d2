"""``varestorer bench --model official:varestorer-2b``: the authors' released model, stage by stage.

The model is :class:`~varestorer.models.official.OfficialVARestorer` at its full shapes with random
weights (no files: speed does not depend on the values), at the official precision per stage
(``set_precision``: encoder float32, the rest under ``--dtype`` autocast). One batch item is one 512 px
pass, i.e. one 128 px LQ tile; a batch is several tiles of one image (each its own bit-draw stream), as
the ``Restorer`` sends them with ``batch_size``. Stages, each timed on the previous one's output:

    clean      LQ -> bicubic to 512 px -> SwinIR
    encode     tokenizer encoder (float32) -> residual BSQ -> the 3,545 transformer inputs
    predict    the one full-attention transformer pass (3,545 tokens) -> bit logits
    to_latent  the bit draw -> f_hat
    decode     decoder -> image
    total      the whole ``model(lq)`` call

The text is the learned no-caption tokens (T5 runs once per prompt, not per tile, and is not timed).
``depth`` keeps the shapes but fewer blocks (CPU timings); peers run on the same LQ batch (same output size).
Result keys are those of :func:`varestorer.benchmark.bench.run_bench` that apply (``format_table`` prints it),
plus ``megapixels_per_s`` (output megapixels per second) and ``depth``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from varestorer.benchmark.bench import bench_peer, device_name, load_average, peer_names
from varestorer.benchmark.timing import DTYPES, Dtype, Timing, count_flops, measure, peak_memory
from varestorer.inference.devices import check_device
from varestorer.models.official import OfficialVARestorer
from varestorer.models.official_config import OfficialConfig
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.transformer.config import transformer_preset


def _tiny() -> OfficialConfig:
    """A tiny official-shaped model (for tests and a CPU run of the GPU script): 64 px passes."""
    from varestorer.archs.swinir_config import SwinIRConfig

    swinir = SwinIRConfig(embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, upscale=4, unshuffle=4)
    return OfficialConfig(
        transformer=transformer_preset("tiny", block_chunks=2),
        tokenizer=tokenizer_preset("tiny"),
        swinir=swinir,
        image_size=64,
        lora_rank=0,
    )


OFFICIAL_BENCH_PRESETS: dict[str, Callable[[], OfficialConfig]] = {
    "official:varestorer-2b": OfficialConfig,
    "official:tiny": _tiny,
}
"""``--model`` names of the official bench: the released shapes, and a tiny one of the same structure."""

STAGES: tuple[str, ...] = ("clean", "encode", "predict", "to_latent", "decode")


def official_bench_model(
    name: str, *, depth: int | None = None, device: torch.device | str = "cpu", dtype: Dtype = "bf16"
) -> OfficialVARestorer:
    """The preset's model with random weights, built on ``device``, at the official precision for ``dtype``.

    ``depth``: that many transformer blocks instead of the preset's (in one chunk when it does not divide).
    """
    if name not in OFFICIAL_BENCH_PRESETS:
        raise ValueError(f"unknown official preset {name!r}; choose from {', '.join(OFFICIAL_BENCH_PRESETS)}")
    config = OFFICIAL_BENCH_PRESETS[name]()
    if depth is not None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        chunks = config.transformer.block_chunks
        transformer = replace(config.transformer, depth=depth, block_chunks=chunks if depth % chunks == 0 else 1)
        config = replace(config, transformer=transformer)
    with torch.device(device):
        model = OfficialVARestorer(config)
    model.set_precision(DTYPES[dtype])
    return model.eval().requires_grad_(False)


def run_official_bench(
    name: str = "official:varestorer-2b",
    *,
    depth: int | None = None,
    device: str | torch.device = "cpu",
    dtype: Dtype = "bf16",
    **options: Any,
) -> dict[str, Any]:
    """Build the official model ``name`` (``depth`` blocks, random weights) on ``device`` at the official precision
    for ``dtype`` and time it with :func:`time_official_model`, which takes ``options`` as they are (batch size,
    compile, runs, warm-up, peers and their weights, seed)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    device = check_device(device)
    model = official_bench_model(name, depth=depth, device=device, dtype=dtype)
    return time_official_model(model, name, dtype=dtype, **options)


def time_official_model(
    model: OfficialVARestorer,
    name: str,
    *,
    dtype: Dtype,
    batch_size: int = 1,
    compile: bool | dict[str, Any] = False,
    runs: int = 3,
    warmup: int = 1,
    peers: tuple[str, ...] | list[str] = (),
    peer_weights: Mapping[str, str | Path] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time a built official model's stages and whole pass on a batch of ``batch_size`` LQ tiles (see the module
    docstring; on its device, its precision set for ``dtype``), so a script can time several batch sizes
    without rebuilding it. ``compile``: True, or ``torch.compile`` keyword
    arguments (e.g. ``{"backend": "eager"}``); the model stays compiled afterwards."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    peer_weights = dict(peer_weights or {})
    names = peer_names(peers, peer_weights)
    device = model.transformer.pos_start.device
    load_before = load_average()
    config = model.config
    S, s = config.image_size, config.scale
    generator = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch_size, 3, S // s, S // s, generator=generator).to(device)
    streams = list(range(batch_size))  # tiles of one image
    state: dict[str, Any] = {}
    steps: dict[str, Callable[[], Any]] = {
        "clean": lambda: model.clean(lq),
        "encode": lambda: model.encode(state["clean"]),
        "predict": lambda: model.predict(state["encode"]),
        "to_latent": lambda: model.to_latent(state["predict"], streams),
        "decode": lambda: model.decode(state["to_latent"]),
        "total": lambda: model(lq, streams=streams),
    }
    gflops: dict[str, float] = {}
    stages: dict[str, Timing] = {}
    with torch.inference_mode():
        for stage, fn in steps.items():  # eager: FLOPs and each stage's output (the next one's input)
            gflops[stage] = count_flops(fn) / batch_size / 1e9
            state[stage] = fn()
        if compile:
            model.compile(**(compile if isinstance(compile, dict) else {}))
        for stage, fn in steps.items():
            stages[stage] = measure(fn, device, warmup=max(warmup, 1 if compile else 0), runs=runs)
        with peak_memory(device) as peak:
            steps["total"]()
        peer_results = {
            peer: bench_peer(peer, lq, dtype=dtype, warmup=warmup, runs=runs, weights=peer_weights.get(peer))
            for peer in names
        }
    total_ms = stages["total"].ms
    tokens = sum(h * w for h, w in model.schedule)
    extra = model.schedule[-1][0] * model.schedule[-1][1] if config.extra_lq_scale else 0
    return {
        "model": name,
        "depth": config.transformer.depth,
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "dtype": dtype,
        "compile": bool(compile),
        "compile_options": compile if isinstance(compile, dict) else {},
        "size": S,
        "lq_size": S // s,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "load_avg": {"before": load_before, "after": load_average()},
        "runs": runs,
        "warmup": warmup,
        "schedule": [list(hw) for hw in model.schedule],
        "tokens": tokens + extra,  # the pass's positions: 1 + (L - 1) + h_K w_K (3,545 at 512 px)
        "params_m": {
            "swinir": _params(model.swinir) if model.swinir is not None else 0.0,
            "encoder": _params(model.encoder),
            "transformer": _params(model.transformer),
            "decoder": _params(model.decoder),
        },
        "stages_ms": {k: v.ms for k, v in stages.items()},
        "stages_cpu_ms": {k: v.cpu_ms for k, v in stages.items()},
        "one_step_ms": stages["predict"].ms,
        "end_to_end_ms": total_ms,
        "images_per_s": batch_size * 1000 / total_ms,
        "megapixels_per_s": batch_size * S * S / 1e6 * 1000 / total_ms,
        "peak_mem_mb": peak.mb,
        "peak_mem_kind": peak.kind,
        "gflops": {**gflops, "multi_step": None},
        "gflop_per_s": {k: gflops[k] * batch_size * 1000 / v.ms for k, v in stages.items()},
        "cpu_gflop_per_s": {
            k: gflops[k] * batch_size * 1000 / v.cpu_ms if v.cpu_ms > 0 else None for k, v in stages.items()
        },
        "multi_step_ms": None,
        "peers": peer_results,
        "speedup_vs_peers": {peer: r["ms"] / total_ms for peer, r in peer_results.items()},  # type: ignore[operator]
    }


def _params(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


__all__ = ["OFFICIAL_BENCH_PRESETS", "STAGES", "official_bench_model", "run_official_bench", "time_official_model"]
