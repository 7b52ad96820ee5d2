"""``varestorer export``: turn an adapter student checkpoint into a self-contained restorer checkpoint."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from varestorer.families import load_pretrained
from varestorer.models.student import predicted_schedule

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """``"15MB"``, ``"500KB"``, ``"2GB"``, ``"1.5GiB"`` or ``"123456"`` -> bytes.

    KB/MB/GB are decimal (MB = 10**6), KiB/MiB/GiB binary; units are case-insensitive.

    Raises:
        ValueError: not a number with a known unit, or under one byte.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (expected e.g. 15MB, 500KB, 2GB, 16MiB or a byte count)")
    size = int(Decimal(match.group(1)) * _UNITS[unit])  # exact, unlike float
    if size <= 0:
        raise ValueError(f"a size must be at least one byte, got {text!r}")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", help="a student checkpoint folder (adapters + encoder + teacher reference)")
    parser.add_argument("-o", "--output", required=True, help="folder to write the exported checkpoint to")
    parser.add_argument(
        "--merge", action="store_true", help="fold the LoRA adapters into the weights (required: the only mode)"
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16", "int8"],
        default="float32",
        help="storage precision of the weights (loading converts back to float32); float16 halves the size, "
        "int8 quarters it (weight matrices as int8 with one scale per output channel; biases, norms and "
        "buffers stay float32)",
    )
    parser.add_argument(
        "--color-fix",
        choices=["none", "adain", "wavelet"],
        default=None,
        help="colour correction the restorer applies by default with this checkpoint (default: unchanged)",
    )
    parser.add_argument(
        "--color-fix-levels",
        type=int,
        default=None,
        metavar="N",
        help="a-trous levels of the wavelet fix the restorer uses by default with this checkpoint (default: unchanged)",
    )
    parser.add_argument(
        "--predicted-scales",
        type=int,
        default=None,
        metavar="N",
        help="the transformer predicts the first N scales only, the finer ones keep the LQ's bits (faster; default: "
        "unchanged)",
    )
    parser.add_argument(
        "--tile-overlap",
        type=int,
        default=None,
        help="overlap of neighbouring tiles in LQ pixels the restorer uses by default with this checkpoint "
        "(default: unchanged; a student without one uses a quarter of its tile)",
    )
    parser.add_argument(
        "--max-shard-size",
        default=None,
        help="split the weights into Hugging Face shards of at most this size, e.g. 15MB, 500KB, 2GB, 16MiB "
        "or a byte count (MB = 10^6 bytes); default: one model.safetensors",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    if not args.merge:
        raise ValueError("nothing to do: pass --merge to write a merged, self-contained checkpoint")
    try:
        max_shard_bytes = None if args.max_shard_size is None else parse_size(args.max_shard_size)
    except ValueError as error:
        raise ValueError(f"--max-shard-size: {error}") from None
    source, target = Path(args.student).resolve(), Path(args.output).resolve()
    if source == target:
        raise ValueError("the output folder must differ from the student folder")
    student = load_pretrained(source, require="exportable", what="an exportable model")
    merged = student if student.config.merged else student.merged()
    if args.color_fix is not None:
        merged.config = replace(merged.config, color_fix=args.color_fix)
    if args.color_fix_levels is not None:
        if not hasattr(merged.config, "color_fix_levels"):
            raise ValueError(f"a {type(merged).__name__} has no colour-fix levels to set")
        merged.config = replace(merged.config, color_fix_levels=args.color_fix_levels)  # validated by the config
    if args.predicted_scales is not None:
        if not hasattr(merged.config, "predicted_scales"):
            raise ValueError(f"a {type(merged).__name__} has no predicted scales to set")
        predicted_schedule(merged.schedule, args.predicted_scales)  # a clear error for a count beyond the schedule
        merged.config = replace(merged.config, predicted_scales=args.predicted_scales)
    if args.tile_overlap is not None:
        if not hasattr(merged.config, "tile_overlap"):
            raise ValueError(f"a {type(merged).__name__} has no default tile overlap to set")
        merged.config = replace(merged.config, tile_overlap=args.tile_overlap)  # validated by the config
    merged.save_pretrained(target, overwrite=args.overwrite, dtype=args.dtype, max_shard_bytes=max_shard_bytes)
    size = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    shards = len(list(target.glob("model-*-of-*.safetensors")))
    layout = f", {shards} shards" if shards else ""
    print(f"exported {source} -> {target} ({size:.1f} MiB {args.dtype}{layout}, LoRA merged, no teacher needed)")
    return 0
