"""``run_bench``: the one-step student stage by stage, its backbone's multi-step generation, and peers.

Stages of one restoration: the methods ``Student.restore`` calls in order (:func:`stage_calls`), each
timed on the previous stage's output, so the per-stage times are the shipped model's:

    preclean   LQ -> cleaned LQ (``None`` in the result unless the model has a pre-cleaner)
    encode     bicubic to the working size -> encoder -> multi-scale quantisation
    predict    ONE transformer pass over every scale with the model's attention mask, plus the LQ's
               bits with ``lq_bit_skip`` (``one_step_ms``)
    to_latent  bit logits -> codes -> f_hat (+ the LQ latent's residual with ``fidelity_path``)
    decode     decoder input -> image
    total      the whole ``student(lq)`` call, timed as one (``end_to_end_ms``)

(Results written before these stages were named used ``precleaner``, ``encoder_quantize``, ``transformer``,
``latent`` and ``decoder``, and timed the transformer with a full mask and without the LQ bits or the
fidelity residual.)

``multi_step_ms`` is the same transformer generating every scale autoregressively through the
sampler (KV cache, classifier-free guidance as a 2B batch, random caption features), and
``ratio = multi_step_ms / one_step_ms``. Everything runs under ``torch.inference_mode``.

Result keys: ``one_step_ms``, ``end_to_end_ms``, ``multi_step_ms``, ``ratio``, ``ratio_end_to_end``
((generation + decoder) / whole restoration), ``stages_ms`` / ``stages_cpu_ms`` (median wall / process
CPU ms per stage), ``gflops`` (per image, counted by ``FlopCounterMode``), ``gflop_per_s`` /
``cpu_gflop_per_s`` (per stage: FLOPs per wall / process-CPU second), ``peak_mem_mb`` (one whole
restoration), ``images_per_s``, ``peers`` (``ms``, ``cpu_ms``, ``images_per_s``, ``gflops``, ``gflop_per_s``,
``cpu_gflop_per_s``, ``peak_mem_mb``, ``weights``), ``speedup_vs_peers`` (peer ms / student ms), and the
setting: ``model``, ``device``, ``torch``, ``dtype``, ``compile``, ``size``, ``lq_size``, ``batch_size``,
``threads``, ``load_avg``, ``schedule``, ``tokens``, ``predicted_tokens`` (those the transformer reads: fewer with
``predicted_scales``), ``params_m``.

Peers are the modules ``varestorer baseline`` runs (:func:`peer_module`): the embedded weights of a peer the
package ships (realesr-general-x4v3), else random weights, or the user's file through ``peer_weights``. On a
shared CPU, compare at ``--threads 1``: with more threads than free cores every OpenMP barrier waits for a
preempted thread, which inflated x4plus 3x here (2 threads: 4.7 s of CPU time for 147 GFLOP; 1 thread: 1.6 s,
about 93 GFLOP per CPU second), so a low ``gflop_per_s`` next to a normal ``cpu_gflop_per_s`` means load, not
a slow path.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from varestorer.benchmark.presets import bench_student
from varestorer.benchmark.timing import DTYPES, Dtype, Timing, count_flops, measure, peak_memory, precision
from varestorer.foreign.peers import EMBEDDED_PEERS, build_peer, load_peer, peer_presets, peer_weights
from varestorer.inference.devices import check_device
from varestorer.models.student import Student
from varestorer.tokenizer.scales import Schedule, token_count
from varestorer.transformer.sampler import sample_scales_detailed
from varestorer.transformer.text import TextCondition

PEERS: tuple[str, ...] = ("bicubic", "realesrgan-x4plus", "realesr-general-x4v3")
"""Peers that can run beside the student: plain bicubic and Real-ESRGAN archs (random weights)."""

# Infinity-2B's sampling settings (Infinity `tools/run_infinity.py`, docs/sources.md) for the multi-step reference.
CFG_SCALE, TEMPERATURE, TOP_P, CAPTION_TOKENS = 3.0, 0.5, 0.97, 32


def peer_names(peers: list[str] | tuple[str, ...], peer_weights: Mapping[str, Any]) -> list[str]:
    """The peers to time (``peers`` then any only named in ``peer_weights``), each checked against :data:`PEERS`."""
    names = list(dict.fromkeys([*peers, *peer_weights]))
    unknown = [p for p in names if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)}")
    return names


def load_average() -> tuple[float, float, float] | None:
    """The OS load averages (1, 5, 15 min), or None where the platform has none."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _half_weights(module: torch.nn.Module, device: torch.device, dtype: Dtype) -> torch.nn.Module:
    """On a GPU, reduced precision stores the weights in that dtype too (no per-call weight casts)."""
    if device.type == "cuda" and dtype != "fp32":
        module.to(DTYPES[dtype])
    return module


def _compile(student: Student) -> None:
    """``torch.compile`` the encoder, transformer and decoder in place (state-dict names unchanged)."""
    for module in (student.encoder, student.transformer, student.decoder):
        module.compile()


def random_caption(student: Student, batch_size: int, generator: torch.Generator | None) -> TextCondition:
    """Caption features of the right width (random: speed does not depend on them)."""
    config = student.transformer.config
    length = min(CAPTION_TOKENS, config.text_max_length)
    device = student.transformer.pos_start.device
    tokens = torch.randn(batch_size, length, config.text_dim, generator=generator).to(device)
    return TextCondition(tokens, torch.full((batch_size,), length, dtype=torch.long, device=device))


STAGES: tuple[str, ...] = ("preclean", "encode", "predict", "to_latent", "decode")
"""The stages of ``Student.restore``, in order; each is the ``Student`` method of that name."""


def stage_calls(student: Student, lq: torch.Tensor, outputs: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """The :data:`STAGES` of ``student.restore(lq)`` as calls, each reading its inputs from ``outputs``.

    Calling them in order and storing each result in ``outputs`` under the stage's name gives
    ``outputs["decode"] == student(lq)`` (``tests/test_bench.py`` checks it with every option on).
    """
    return {
        "preclean": lambda: student.preclean(lq),
        "encode": lambda: student.encode(outputs["preclean"]),
        "predict": lambda: student.predict(outputs["encode"]),
        "to_latent": lambda: student.to_latent(outputs["predict"], outputs["encode"]),
        "decode": lambda: student.decode(outputs["to_latent"].decoder_input),
    }


def _measured(fn: Callable[[], Any], device: torch.device, warmup: int, runs: int) -> tuple[Timing, int, float]:
    """(timing, FLOPs of one call, peak MB of one call); the counted call doubles as a warm-up run."""
    with peak_memory(device) as peak:
        flops = count_flops(fn)
    return measure(fn, device, warmup=max(warmup - 1, 0), runs=runs), flops, peak.mb


def peer_module(
    name: str, *, weights: str | Path | None = None, device: torch.device | str = "cpu", dtype: Dtype = "fp32"
) -> torch.nn.Module:
    """The peer module ``bench`` times: ``load_peer(weights, arch=name)`` (what ``varestorer baseline`` gives a
    user) or, without weights, the package's embedded weights of that peer if it ships them, else the preset's
    arch with random weights (same class and config; speed does not depend on the values: no denormals were
    seen in either), moved and set to eval as ``Restorer`` does."""
    if name not in PEERS or name == "bicubic" or name not in peer_presets():
        raise ValueError(f"unknown peer arch {name!r}; choose from {', '.join(p for p in PEERS if p != 'bicubic')}")
    device = torch.device(device)
    if weights is None and name in EMBEDDED_PEERS:
        weights = peer_weights(name)  # the weights shipped in the package: what a user gets
    if weights is not None:
        net = load_peer(weights, arch=name).to(device)
    else:
        with torch.device(device):
            net = build_peer(name)
    return _half_weights(net.eval(), device, dtype)


def bench_peer(
    name: str,
    lq: torch.Tensor,
    *,
    dtype: Dtype,
    warmup: int,
    runs: int,
    weights: str | Path | None = None,
) -> dict[str, float | int | str | None]:
    """One peer x4 restorer on the same LQ batch, device and precision (``weights``: see :func:`peer_module`)."""
    device = lq.device
    if name == "bicubic":
        if weights is not None:
            raise ValueError("bicubic has no weights")

        def fn() -> torch.Tensor:
            return F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)

    elif name in PEERS and name in peer_presets():
        if weights is None and name in EMBEDDED_PEERS:
            weights = peer_weights(name)  # named in the result: the shipped weights, not random ones
        net = peer_module(name, weights=weights, device=device, dtype=dtype)

        def fn() -> torch.Tensor:
            with precision(device, dtype):
                return net(lq)

    else:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    with torch.inference_mode():
        timing, flops, peak_mb = _measured(fn, device, warmup, runs)
    batch = lq.shape[0]
    return {
        "ms": timing.ms,
        "cpu_ms": timing.cpu_ms,
        "images_per_s": batch * 1000 / timing.ms,
        "gflops": flops / batch / 1e9,
        "gflop_per_s": flops / 1e6 / timing.ms,
        "cpu_gflop_per_s": flops / 1e6 / timing.cpu_ms if timing.cpu_ms > 0 else None,
        "peak_mem_mb": peak_mb,
        "weights": "random" if weights is None else str(weights),
    }


def run_bench(
    model: str,
    *,
    size: int | None = None,
    schedule: Schedule | None = None,
    device: str | torch.device = "cpu",
    dtype: Dtype = "fp32",
    batch_size: int = 1,
    compile: bool = False,
    runs: int = 3,
    warmup: int = 1,
    peers: tuple[str, ...] | list[str] = (),
    multi_step: bool = True,
    precleaner: bool = False,
    seed: int = 0,
    peer_weights: Mapping[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Benchmark a student (preset or checkpoint folder) on one device; see the module docstring.

    Args:
        model: ``bench_presets()`` name or student checkpoint folder.
        size: HQ size in px (LQ = size / scale); ``None``: the preset's / checkpoint's own.
        schedule: token schedule override (ends at the latent grid).
        dtype: ``fp32``, or ``bf16``/``fp16`` autocast (on a GPU the weights are stored in it too).
        compile: ``torch.compile`` the encoder, transformer and decoder (one-step path only).
        runs / warmup: timed runs (median reported) and untimed warm-up calls per stage.
        peers: names from :data:`PEERS`, run on the same LQ batch.
        multi_step: also time the backbone's autoregressive generation (KV cache + CFG).
        peer_weights: peer name -> weights file (loaded as ``varestorer baseline`` loads them); others random.

    Returns:
        A JSON-ready dict (keys in the module docstring; ``format_table`` prints it).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    peer_weights = dict(peer_weights or {})
    names = peer_names(peers, peer_weights)
    device = check_device(device)  # one clear line for CUDA on a CPU build, unknown names, missing GPUs
    generator = torch.Generator().manual_seed(seed)
    load_before = load_average()

    student = bench_student(model, size=size, schedule=schedule, precleaner=precleaner, device=device)
    _half_weights(student, device, dtype)
    if device.type == "cuda":  # the conv nets take channels-last activations; give cuDNN matching weights
        for module in (student.encoder, student.decoder):
            module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # real kwarg, absent from the stubs
    config = student.config
    S, s = config.image_size, config.scale
    lq = torch.rand(batch_size, 3, S // s, S // s, generator=generator).to(device)
    # Each stage reads the previous stages' outputs from `state`; without a pre-cleaner its stage is untimed.
    state: dict[str, Any] = {}
    steps = {**stage_calls(student, lq, state), "total": lambda: student(lq)}
    timed = [name for name in steps if name != "preclean" or student.precleaner is not None]

    def with_precision(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with precision(device, dtype):
                return fn()

        return call

    gflops: dict[str, float | None] = dict.fromkeys(steps)
    stages: dict[str, Timing | None] = dict.fromkeys(steps)
    with torch.inference_mode():
        # Pass 1, eager: FLOPs and every stage's output (the next stage's input).
        for name, fn in steps.items():
            if name in timed:
                gflops[name] = count_flops(with_precision(fn)) / batch_size / 1e9
            state[name] = with_precision(fn)()
        if compile:
            _compile(student)
        # Pass 2: timings (warm-up absorbs compilation).
        for name in timed:
            fn = steps[name]
            stages[name] = measure(with_precision(fn), device, warmup=max(warmup, 1 if compile else 0), runs=runs)
        with peak_memory(device) as peak:
            with_precision(steps["total"])()
        multi: dict[str, float] | None = None
        if multi_step:
            multi = _bench_multi_step(student, batch_size, device, dtype, warmup, runs, generator)
        peer_results = {
            name: bench_peer(name, lq, dtype=dtype, warmup=warmup, runs=runs, weights=peer_weights.get(name))
            for name in names
        }

    total_ms = stages["total"].ms  # type: ignore[union-attr]
    one_ms = stages["predict"].ms  # type: ignore[union-attr]
    result: dict[str, Any] = {
        "model": str(model),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "dtype": dtype,
        "compile": compile,
        "size": S,
        "lq_size": S // s,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "load_avg": {"before": load_before, "after": load_average()},
        "runs": runs,
        "warmup": warmup,
        "schedule": [list(hw) for hw in student.schedule],
        "tokens": token_count(student.schedule),
        "predicted_tokens": token_count(student.predicted_schedule),
        "params_m": {
            "encoder": _params(student.encoder),
            "transformer": _params(student.transformer),
            "decoder": _params(student.decoder),
            "precleaner": _params(student.precleaner) if student.precleaner is not None else 0.0,
        },
        "stages_ms": {k: (v.ms if v else None) for k, v in stages.items()},
        "stages_cpu_ms": {k: (v.cpu_ms if v else None) for k, v in stages.items()},
        "one_step_ms": one_ms,
        "end_to_end_ms": total_ms,
        "images_per_s": batch_size * 1000 / total_ms,
        "peak_mem_mb": peak.mb,
        "peak_mem_kind": peak.kind,
        "gflops": {**gflops, "multi_step": multi["gflops"] if multi else None},
        "gflop_per_s": {k: _rate(gflops[k], batch_size, v.ms) if v else None for k, v in stages.items()},
        "cpu_gflop_per_s": {k: _rate(gflops[k], batch_size, v.cpu_ms) if v else None for k, v in stages.items()},
        "multi_step_ms": multi["ms"] if multi else None,
        "multi_step_cpu_ms": multi["cpu_ms"] if multi else None,
        "multi_step_peak_mem_mb": multi["peak_mem_mb"] if multi else None,
        "multi_step_settings": {"cfg": CFG_SCALE, "temperature": TEMPERATURE, "top_p": TOP_P, "compiled": False},
        "ratio": multi["ms"] / one_ms if multi else None,
        "ratio_end_to_end": (multi["ms"] + stages["decode"].ms) / total_ms if multi else None,  # type: ignore[union-attr]
        "peers": peer_results,
        "speedup_vs_peers": {name: r["ms"] / total_ms for name, r in peer_results.items()},  # type: ignore[operator]
    }
    return result


def _bench_multi_step(
    student: Student,
    batch_size: int,
    device: torch.device,
    dtype: Dtype,
    warmup: int,
    runs: int,
    generator: torch.Generator,
) -> dict[str, float]:
    caption = random_caption(student, batch_size, generator)
    sample_generator = torch.Generator(device=device).manual_seed(1)

    def call() -> Any:
        with precision(device, dtype):
            return sample_scales_detailed(
                student.transformer,
                student.quantizer,
                student.schedule,
                caption,
                cfg_scale=CFG_SCALE,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                generator=sample_generator,
            )

    timing, flops, peak_mb = _measured(call, device, warmup, runs)
    return {"ms": timing.ms, "cpu_ms": timing.cpu_ms, "gflops": flops / batch_size / 1e9, "peak_mem_mb": peak_mb}


def _rate(gflops_per_image: float | None, batch_size: int, ms: float) -> float | None:
    """GFLOP per second of wall (or CPU) time for a stage of ``batch_size`` images."""
    if gflops_per_image is None or ms <= 0:
        return None
    return gflops_per_image * batch_size * 1000 / ms


def _params(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of one ``run_bench`` result."""
    r = result
    lines = [
        f"model {r['model']}  {r['size']}px (LQ {r['lq_size']}px)  batch {r['batch_size']}  {r['dtype']}"
        f"{'  compiled' if r['compile'] else ''}  tokens {r['tokens']} in {len(r['schedule'])} scales"
        + (
            f" (the transformer over {r['predicted_tokens']})"
            if r.get("predicted_tokens", r["tokens"]) != r["tokens"]
            else ""
        ),
        f"device {r['device']}  torch {r['torch']}  load {r['load_avg']['before']}",
        "",
        f"{'stage':<22}{'ms':>10}{'cpu ms':>10}{'GFLOP/img':>11}{'GFLOP/s':>9}{'per cpu s':>10}",
    ]
    for name, ms in r["stages_ms"].items():
        lines.append(
            f"{name:<22}{_fmt(ms):>10}{_fmt(r['stages_cpu_ms'][name]):>10}{_fmt(r['gflops'].get(name)):>11}"
            f"{_fmt(r['gflop_per_s'].get(name), 0):>9}{_fmt(r['cpu_gflop_per_s'].get(name), 0):>10}"
        )
    if r["multi_step_ms"] is not None:
        lines.append(
            f"{'multi-step (KV+CFG)':<22}{_fmt(r['multi_step_ms']):>10}{_fmt(r['multi_step_cpu_ms']):>10}"
            f"{_fmt(r['gflops']['multi_step']):>11}"
        )
        lines.append(
            f"ratio multi/one-step {r['ratio']:.2f}x (transformer)  {r['ratio_end_to_end']:.2f}x (with decoding)"
        )
    lines.append(f"images/s {r['images_per_s']:.3f}  peak memory {r['peak_mem_mb']:.0f} MB ({r['peak_mem_kind']})")
    if r["peers"]:
        lines += [
            "",
            f"{'peer':<22}{'ms':>10}{'cpu ms':>10}{'GFLOP/img':>11}{'GFLOP/s':>9}{'per cpu s':>10}"
            f"{'student speed-up':>18}  weights",
        ]
        for name, p in r["peers"].items():
            lines.append(
                f"{name:<22}{_fmt(p['ms']):>10}{_fmt(p['cpu_ms']):>10}{_fmt(p['gflops']):>11}"
                f"{_fmt(p.get('gflop_per_s'), 0):>9}{_fmt(p.get('cpu_gflop_per_s'), 0):>10}"
                f"{p['ms'] / r['end_to_end_ms']:>17.2f}x  {p.get('weights', 'random')}"
            )
    return "\n".join(lines)
