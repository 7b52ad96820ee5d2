"""``varestorer export``: turn an adapter student checkpoint into a self-contained restorer checkpoint."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from varestorer.models.student import Student


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", help="a student checkpoint folder (adapters + encoder + teacher reference)")
    parser.add_argument("-o", "--output", required=True, help="folder to write the exported checkpoint to")
    parser.add_argument(
        "--merge", action="store_true", help="fold the LoRA adapters into the weights (required: the only mode)"
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="storage precision of the weights (loading converts back to float32); float16 halves the size",
    )
    parser.add_argument(
        "--color-fix",
        choices=["none", "adain", "wavelet"],
        default=None,
        help="colour correction the restorer applies by default with this checkpoint (default: unchanged)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    if not args.merge:
        raise ValueError("nothing to do: pass --merge to write a merged, self-contained checkpoint")
    source, target = Path(args.student).resolve(), Path(args.output).resolve()
    if source == target:
        raise ValueError("the output folder must differ from the student folder")
    student = Student.from_pretrained(source)
    merged = student if student.config.merged else student.merged()
    if args.color_fix is not None:
        merged.config = replace(merged.config, color_fix=args.color_fix)
    merged.save_pretrained(target, overwrite=args.overwrite, dtype=getattr(torch, args.dtype))
    size = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    print(f"exported {source} -> {target} ({size:.1f} MiB, LoRA merged, no teacher needed)")
    return 0
