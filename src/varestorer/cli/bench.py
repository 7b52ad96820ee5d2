"""``varestorer bench``: time the one-step restorer stage by stage against multi-step generation and peers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from varestorer.io.atomic import atomic_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="preset (tiny, small, infinity-125m, infinity-2b) or student folder"
    )
    parser.add_argument("--size", type=int, default=None, help="HQ size in px (LQ = size/4); default: the model's own")
    parser.add_argument("--schedule", default=None, help="token schedule override, e.g. 1,2,4,8,16,32 (square sides)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="torch.compile encoder, transformer and decoder")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per stage (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per stage")
    parser.add_argument("--peers", default="", help="comma list: bicubic,realesrgan-x4plus,realesr-general-x4v3")
    parser.add_argument("--no-multi-step", action="store_true", help="skip the autoregressive generation reference")
    parser.add_argument("--precleaner", action="store_true", help="presets: add the precleaner-1x stage")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def run(args: argparse.Namespace) -> int:
    import torch

    from varestorer.benchmark.bench import format_table, run_bench
    from varestorer.benchmark.presets import parse_schedule

    if args.json is not None and args.json.exists() and not args.overwrite:
        raise FileExistsError(f"{args.json} exists; pass --overwrite to replace it")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    result = run_bench(
        args.model,
        size=args.size,
        schedule=parse_schedule(args.schedule) if args.schedule else None,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        compile=args.compile,
        runs=args.runs,
        warmup=args.warmup,
        peers=[p for p in args.peers.split(",") if p],
        multi_step=not args.no_multi_step,
        precleaner=args.precleaner,
    )
    print(format_table(result))
    if args.json is not None:
        with atomic_path(args.json, overwrite=args.overwrite) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0
