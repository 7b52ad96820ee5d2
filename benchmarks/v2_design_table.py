"""Measured design table for default model v2 (issue 16): time per output megapixel of every stage.

Each stage is timed on its own input, interleaved round by round with every other item (a loaded machine's
drift hits all rows alike), median over the rounds of the process CPU time (and wall time) of one call:

- pre-cleaner: realesr-general-x4v3's arch (SRVGGNetCompact, 64 features, 32 convs) at x4 on the LQ tile,
  its x1 variant (same body, no shuffle), and today's ``precleaner-1x`` (32 features, 8 convs);
- encoder / decoder: a RANDOM-WEIGHTS STAND-IN of TAEF2 (the structure in /work/shared/weights/taef2/README.md:
  64 channels, 3x3 convs, ReLU blocks, three pooled GroupNorm blocks, 32-channel latent at stride 8); the
  pretrained modules of the `taef2` branch have the same layers, so the same FLOPs and speed;
- quantiser: the package's bitwise multi-scale quantiser on that 32-channel latent (``quantize`` for the
  transformer inputs and ``accumulate`` of the predicted codes, summed);
- transformer: ``NextScaleTransformer`` variants (random weights) over each schedule, full attention, one pass;
- peers: realesrgan-x4plus and realesr-general-x4v3 (x4, whole tile) in the same run.

Tile overlap and batching: ``per_mp_at_overlap`` multiplies a tile's time by the tile count that
``varestorer.inference.tiling.tile_starts`` gives for a 512 x 512 LQ image (2048 px out) at that overlap;
the batching rows time the whole pipeline on 1, 2 and 4 tiles at once.

    nice python benchmarks/v2_design_table.py --rounds 3 --json local/v2_design.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.archs.srvgg import SRVGG_PRESETS, SRVGGConfig, SRVGGNetCompact
from varestorer.benchmark.timing import count_flops
from varestorer.foreign.peers import build_peer
from varestorer.inference.tiling import tile_starts
from varestorer.tokenizer.autoencoder import build_quantizer
from varestorer.tokenizer.config import TokenizerConfig
from varestorer.tokenizer.scales import Schedule, infinity_schedule, token_count
from varestorer.transformer.config import TRANSFORMER_PRESETS
from varestorer.transformer.model import NextScaleTransformer


# ------------------------------------------------------------------ TAEF2 stand-in (random weights)
class _Block(nn.Module):
    def __init__(self, pooled: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
        )  # fmt: skip
        self.pool = (
            nn.Sequential(
                nn.Conv2d(64, 256, 1, bias=False), nn.GroupNorm(4, 256), nn.ReLU(), nn.Conv2d(256, 64, 1, bias=False)
            )
            if pooled
            else None
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


def taef2_encoder() -> nn.Module:
    down = [nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)]
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), _Block(),
        *down, _Block(), _Block(), _Block(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False), _Block(), _Block(), _Block(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False), _Block(True), _Block(True), _Block(True),
        nn.Conv2d(64, 32, 3, padding=1),
    )  # fmt: skip


class _SoftClamp(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3


def taef2_decoder() -> nn.Module:
    def up() -> list[nn.Module]:
        return [nn.Upsample(scale_factor=2), nn.Conv2d(64, 64, 3, padding=1, bias=False)]

    return nn.Sequential(
        _SoftClamp(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), _Block(True), _Block(True), _Block(True),
        *up(), _Block(), _Block(), _Block(), *up(), _Block(), _Block(), _Block(), *up(), _Block(),
        nn.Conv2d(64, 3, 3, padding=1),
    )  # fmt: skip


def lq_encoder() -> nn.Module:
    """HYPOTHETICAL: TAEF2's encoder from its stride-4 stage on, fed the 64 px LQ itself (no bicubic x4 first):
    conv 3->64 and three Blocks at 64 px, one stride-2 conv, the three pooled Blocks at 32 px, conv 64->32.
    Same 32 x 32 x 32 latent for a 256 px output; needs training (TAEF2's later layers can initialise it)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), _Block(), _Block(), _Block(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False), _Block(True), _Block(True), _Block(True),
        nn.Conv2d(64, 32, 3, padding=1),
    )  # fmt: skip


def light_decoder() -> nn.Module:
    """HYPOTHETICAL: TAEF2's decoder without its last full-resolution Block (3 of its 35.6 GFLOP's convs at
    256 px); needs fine-tuning."""
    full = taef2_decoder()
    return nn.Sequential(*list(full)[:18], list(full)[19])


# ------------------------------------------------------------------------------------------ settings
TEN = infinity_schedule(512, 512)  # Infinity's 10 scales to 32 x 32: 256 px at stride 8 (2521 tokens)
SIX = ((1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (32, 32))
FOUR = ((1, 1), (4, 4), (16, 16), (32, 32))
TWO = ((1, 1), (32, 32))
SMALL = TRANSFORMER_PRESETS["small"]
TRANSFORMERS = {
    "small w256 d7": SMALL,
    "w256 d4": replace(SMALL, depth=4),
    "w192 d6 (3 heads)": replace(SMALL, width=192, num_heads=3, text_dim=192),
    "w128 d4 (2 heads)": replace(SMALL, width=128, num_heads=2, text_dim=128, pool_head_dim=64),
}
# (label, transformer, LQ tile px, schedule, dtype)
ROWS: list[tuple[str, str, int, Schedule, str]] = [
    ("today: 10 scales", "small w256 d7", 64, TEN, "fp32"),
    ("6 scales 1..32", "small w256 d7", 64, SIX, "fp32"),
    ("4 scales 1,4,16,32", "small w256 d7", 64, FOUR, "fp32"),
    ("2 scales 1,32", "small w256 d7", 64, TWO, "fp32"),
    ("6 scales, w256 d4", "w256 d4", 64, SIX, "fp32"),
    ("6 scales, w192 d6", "w192 d6 (3 heads)", 64, SIX, "fp32"),
    ("6 scales, w128 d4", "w128 d4 (2 heads)", 64, SIX, "fp32"),
    ("2 scales, w256 d4", "w256 d4", 64, TWO, "fp32"),
    ("2 scales, w128 d4", "w128 d4 (2 heads)", 64, TWO, "fp32"),
    ("2 scales, w128 d4, bf16 autocast", "w128 d4 (2 heads)", 64, TWO, "bf16"),
    ("10 scales, bf16 autocast", "small w256 d7", 64, TEN, "bf16"),
    ("6 scales, bf16 autocast", "small w256 d7", 64, SIX, "bf16"),
    ("128 px tile: 13 scales", "small w256 d7", 128, infinity_schedule(1024, 1024), "fp32"),
    ("128 px tile: 7 scales 1..64", "small w256 d7", 128, (*SIX, (64, 64)), "fp32"),
]
OVERLAPS = (0, 8, 16, 32)
BATCHES = (1, 2, 4)
IMAGE_LQ = 512  # the image the overlap multipliers are computed for (2048 px out)


def tiles_for(tile: int, overlap: int, image: int = IMAGE_LQ) -> int:
    return len(tile_starts(image, tile, overlap)) ** 2


def autocast(dtype: str) -> Any:
    import contextlib

    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--only", default="", help="comma list of substrings: time only the items naming one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with torch.inference_mode():  # inputs built here too: FLOP counting needs no autograd anywhere
        result = measure_all(args.rounds, args.threads, [k for k in args.only.split(",") if k])
    for name, r in result["items"].items():
        mp = r["out_px"] ** 2 * r.get("batch", 1) / 1e6
        r["cpu_ms_per_mp"] = r["cpu_ms"] / mp
        print(
            f"{name:<44}{r['cpu_ms']:>10.1f} ms cpu{r['wall_ms']:>10.1f} ms wall{r['gflop']:>8.1f} GFLOP"
            f"{r['gflop'] * 1000 / r['cpu_ms']:>6.0f}/cpu-s{r['cpu_ms_per_mp']:>10.0f} ms/MP"
        )
    print("tiles of a 512 px LQ image (tile/overlap):", result["tiles_for_512_lq"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


def measure_all(rounds: int, threads: int, only: list[str]) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)

    enc, dec = taef2_encoder().eval(), taef2_decoder().eval()
    quantizer = build_quantizer(TokenizerConfig(token_dim=32, quantizer="bitwise")).eval()
    pre = {
        "x4v3 at x4": SRVGGNetCompact(SRVGGConfig()).eval(),
        "x4v3 at x1": SRVGGNetCompact(SRVGGConfig(upscale=1)).eval(),
        "precleaner-1x (today)": SRVGGNetCompact(SRVGG_PRESETS["precleaner-1x"]).eval(),
    }
    peers = {name: build_peer(name).eval() for name in ("realesrgan-x4plus", "realesr-general-x4v3")}
    nets = {name: NextScaleTransformer(cfg).eval() for name, cfg in TRANSFORMERS.items()}

    items: dict[str, Callable[[], Any]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for lq_px in (64, 128):
        out_px, lq = lq_px * 4, torch.rand(1, 3, lq_px, lq_px, generator=g)
        img = torch.rand(1, 3, out_px, out_px, generator=g) * 2 - 1
        lat = torch.randn(1, 32, out_px // 8, out_px // 8, generator=g)
        items[f"encoder {out_px}"] = lambda img=img: enc(img)
        items[f"decoder {out_px}"] = lambda lat=lat: dec(lat)
        meta[f"encoder {out_px}"] = meta[f"decoder {out_px}"] = {"out_px": out_px}
        if lq_px == 64:
            lq_enc, light_dec = lq_encoder().eval(), light_decoder().eval()
            items["hypothetical encoder from the 64 px LQ"] = lambda lq=lq, net=lq_enc: net(lq)
            items["hypothetical decoder without last block 256"] = lambda lat=lat, net=light_dec: net(lat)
            meta["hypothetical encoder from the 64 px LQ"] = {"out_px": out_px}
            meta["hypothetical decoder without last block 256"] = {"out_px": out_px}
        if lq_px == 64:  # bf16 autocast of the convolutions (AVX512-BF16 on this CPU): changes outputs
            x4 = pre["x4v3 at x4"]
            for name, net, x in (("encoder", enc, img), ("decoder", dec, lat), ("pre x4v3 at x4", x4, lq)):

                def bf16_call(net: nn.Module = net, x: torch.Tensor = x) -> Any:
                    with autocast("bf16"):
                        return net(x)

                items[f"{name} {out_px if name != 'pre x4v3 at x4' else lq_px} bf16"] = bf16_call
                meta[f"{name} {out_px if name != 'pre x4v3 at x4' else lq_px} bf16"] = {"out_px": out_px}
        for name, net in pre.items():
            items[f"pre {name} {lq_px}"] = lambda net=net, lq=lq: net(lq)
            meta[f"pre {name} {lq_px}"] = {"out_px": out_px}
        for name, net in peers.items():
            items[f"peer {name} {lq_px}"] = lambda net=net, lq=lq: net(lq)
            meta[f"peer {name} {lq_px}"] = {"out_px": out_px}
    for label, tname, lq_px, schedule, dtype in ROWS:
        out_px, L = lq_px * 4, token_count(schedule)
        lat = torch.randn(1, 32, out_px // 8, out_px // 8, generator=g)
        inputs = quantizer.quantize(lat, schedule, with_norms=False).inputs
        codes = [torch.randn(1, 32, h, w, generator=g).sign() for h, w in schedule]

        def quant(lat: torch.Tensor = lat, schedule: Schedule = schedule, codes: list = codes) -> Any:
            quantizer.quantize(lat, schedule, with_norms=False)
            return quantizer.accumulate(codes, schedule, schedule[-1], with_inputs=False)

        def tf(net: nn.Module = nets[tname], x: torch.Tensor = inputs, s: Schedule = schedule, d: str = dtype) -> Any:
            with autocast(d):
                return net(x, s, None, mask="full")

        items[f"quant {label}"], items[f"tf {label}"] = quant, tf
        meta[f"tf {label}"] = meta[f"quant {label}"] = {"out_px": out_px, "tokens": L, "lq_px": lq_px}
    # Whole pipeline (x4v3 at x4 -> encoder -> quantiser -> small transformer, 6 scales -> codes -> decoder)
    # on B tiles at once: the batching rows.
    for batch in BATCHES:
        lq = torch.rand(batch, 3, 64, 64, generator=g)
        codes = [torch.randn(batch, 32, h, w, generator=g).sign() for h, w in SIX]

        def pipeline(lq: torch.Tensor = lq, codes: list = codes) -> Any:
            f = enc(pre["x4v3 at x4"](lq).clamp(0, 1) * 2 - 1)
            logits = nets["small w256 d7"](quantizer.quantize(f, SIX, with_norms=False).inputs, SIX, None, mask="full")
            f_hat = quantizer.accumulate(codes, SIX, SIX[-1], with_inputs=False)[0]
            return dec(f_hat + 0 * logits.mean())

        items[f"pipeline 6 scales batch {batch}"] = pipeline
        meta[f"pipeline 6 scales batch {batch}"] = {"out_px": 256, "batch": batch}
    # HYPOTHETICAL v2 candidates end to end on one 64 px tile: precleaner-1x -> encoder from the LQ ->
    # quantiser -> transformer -> codes -> decoder (light: without its last block), decoder fp32 or bf16.
    lq, lq_enc, light_dec = torch.rand(1, 3, 64, 64, generator=g), lq_encoder().eval(), light_decoder().eval()
    for label, tname, schedule in (
        ("2 scales w128 d4", "w128 d4 (2 heads)", TWO),
        ("6 scales w256 d4", "w256 d4", SIX),
    ):
        codes = [torch.randn(1, 32, h, w, generator=g).sign() for h, w in schedule]
        for dtype in ("fp32", "bf16"):

            def candidate(
                lq: torch.Tensor = lq,
                codes: list = codes,
                net: nn.Module = nets[tname],
                s: Schedule = schedule,
                dtype: str = dtype,
            ) -> Any:
                f = lq_enc(pre["precleaner-1x (today)"](lq).clamp(0, 1) * 2 - 1)
                logits = net(quantizer.quantize(f, s, with_norms=False).inputs, s, None, mask="full")
                f_hat = quantizer.accumulate(codes, s, s[-1], with_inputs=False)[0]
                with autocast(dtype):
                    return light_dec(f_hat + 0 * logits.mean())

            items[f"hypothetical v2 candidate {label}, decoder {dtype}"] = candidate
            meta[f"hypothetical v2 candidate {label}, decoder {dtype}"] = {"out_px": 256}

    if only:
        items = {k: fn for k, fn in items.items() if any(word in k for word in only)}
    cpu: dict[str, list[float]] = {k: [] for k in items}
    wall: dict[str, list[float]] = {k: [] for k in items}
    flops: dict[str, float] = {}
    load_before = os.getloadavg()
    for name, fn in items.items():  # warm-up round, doubles as the FLOP count
        flops[name] = count_flops(fn) / 1e9
    for _ in range(rounds):
        for name, fn in items.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append((time.perf_counter() - w0) * 1000)
            cpu[name].append((time.process_time() - c0) * 1000)
    result = {
        "threads": threads,
        "rounds": rounds,
        "torch": torch.__version__,
        "load_avg": {"before": load_before, "after": os.getloadavg()},
        "items": {
            name: {
                **meta.get(name, {}),
                "cpu_ms": statistics.median(cpu[name]),
                "wall_ms": statistics.median(wall[name]),
                "cpu_ms_runs": cpu[name],
                "gflop": flops[name],
            }
            for name in items
        },
        "tiles_for_512_lq": {f"{t}/{o}": tiles_for(t, o) for t in (64, 128) for o in OVERLAPS},
    }
    return result


if __name__ == "__main__":
    raise SystemExit(main())
