"""``varestorer reconstruct``: round-trip images through a tokenizer to see how good it is.

Each input goes encode -> quantize over the schedule -> decode at its own size and is written under
its own file name, so ``varestorer evaluate --pred OUTDIR --gt INPUTDIR`` scores the tokenizer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from varestorer.cli._batch import add_io_arguments, run_batch

DEFAULT_TILE = 512

EPILOG = """\
--model takes a tokenizer folder; a teacher folder (its tokenizer/); a student folder (an adapter
student: its teacher's tokenizer; a merged one such as the embedded 'default', which names no
teacher: its own encoder, quantizer and decoder, with a warning, since distillation fine-tuned
them apart); or an embedded name. Default: the embedded 'default-tokenizer' if this install ships
it, else 'default'.

{syntax}

Images larger than --tile are split into overlapping tiles blended with feathered weights, as
restore does; every tile (and an image smaller than a tile) is padded to the stride and cropped
back. The coarse scales summarise a whole tile, so results depend on --tile.

--stats FILE.json writes, per scale, the fraction of ones (and the most unbalanced bit), how often a
bit flips between horizontally / vertically neighbouring tokens (0 flat, 0.5 noise) and the mean
latent residual norm after that scale, over every tile quantized (overlaps and padding included);
the same table is printed unless --quiet.

Outputs keep the input's format (--ext auto); pass --ext png to spare JPEG/WebP inputs a second
lossy compression. Examples (score with no border crop: the sizes are the inputs'):
  varestorer reconstruct examples -o rec --stats rec.json
  varestorer evaluate --pred rec --gt examples --crop-border 0
  varestorer reconstruct examples -o rec4 --scales 4            # only the 4 coarsest scales
  varestorer reconstruct photos -o rec --tile 256 --scales 1,2,4,8,16,32 --model DIR   # stride 8
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from varestorer.inference.reconstruction import SCALES_SYNTAX

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG.format(syntax=SCALES_SYNTAX)
    add_io_arguments(parser)
    parser.add_argument("--model", default=None, metavar="NAME|DIR", help="tokenizer, teacher or student (see below)")
    parser.add_argument(
        "--scales", default=None, metavar="SPEC", help="full (default), a count N, sides S1,...,SK, or none (below)"
    )
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"tile side in px (default {DEFAULT_TILE})")
    parser.add_argument("--tile-overlap", type=int, default=None, help="tile overlap in px (default tile/8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="default float32"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="tiles run at once")
    parser.add_argument("--stats", default=None, metavar="FILE.json", help="write per-scale token statistics here")
    with contextlib.suppress(argparse.ArgumentError):  # unless the shared I/O options already define it
        parser.add_argument("-q", "--quiet", action="store_true", help="no model line, progress or statistics table")


def run(args: argparse.Namespace) -> int:
    from varestorer.inference.reconstruction import (
        RoundTrip,
        default_overlap,
        default_tokenizer_source,
        load_tokenizer,
        parse_scales,
        schedule_for,
    )
    from varestorer.inference.restorer import Restorer
    from varestorer.io.atomic import atomic_path
    from varestorer.tokenizer.statistics import TokenStatistics, format_statistics

    scales = parse_scales(args.scales)
    if args.stats and scales.kind == "none":
        raise ValueError("--stats needs tokens; --scales none skips the quantizer")
    if args.stats and Path(args.stats).exists() and not args.overwrite:
        raise FileExistsError(f"{args.stats} exists; pass --overwrite to replace it")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    tokenizer, where, caveat = load_tokenizer(args.model or default_tokenizer_source())
    if caveat:
        print(f"warning: {caveat}", file=sys.stderr)
    stride = int(tokenizer.stride)
    overlap = default_overlap(args.tile, stride) if args.tile_overlap is None else args.tile_overlap
    if not 0 <= overlap < args.tile:
        raise ValueError(f"--tile-overlap must be in [0, {args.tile}) for a {args.tile} px tile, got {overlap}")
    total, current, images = TokenStatistics(), [TokenStatistics()], [0]
    model = RoundTrip(tokenizer, scales, args.tile, on_tokens=lambda tokens, schedule: current[0].add(tokens, schedule))
    try:
        restorer = Restorer(
            model,
            device=args.device,
            dtype=args.dtype,
            tile=args.tile,
            tile_overlap=overlap,
            batch_size=args.batch_size,
            color_fix="none",
        )
    except (RuntimeError, AssertionError) as error:  # e.g. CUDA asked of a CPU-only torch
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"--device {args.device}: {reason}") from None
    quiet = getattr(args, "quiet", False)
    tile_schedule = schedule_for(scales, tokenizer, args.tile, args.tile, args.tile // stride)
    sides = "none" if tile_schedule is None else ",".join(str(h) for h, _ in tile_schedule)
    if not quiet:
        print(
            f"tokenizer: {where}; stride {stride}, {tokenizer.token_dim} bits per token; tile {args.tile} px "
            f"(overlap {overlap}); scales {args.scales or 'full'} (a full tile: {sides}); "
            f"on {restorer.device} ({restorer.dtype})",
            file=sys.stderr,
        )

    def process(array, tiles=None):
        current[0] = TokenStatistics()
        result = restorer(array) if tiles is None else restorer(array, progress=tiles)
        total.merge(current[0])  # only images whose round trip succeeded count
        images[0] += 1
        return result

    code = run_batch(args, process, verb="reconstructed")
    stats = total.result()
    if stats and not quiet:
        print(format_statistics(stats))
    if args.stats:
        report = {
            "tokenizer": where,
            "tile": args.tile,
            "tile_overlap": overlap,
            "scales": args.scales or "full",
            "tile_schedule": [list(hw) for hw in tile_schedule or ()],
            "images": images[0],
            "per_scale": [s.to_dict() for s in stats],
        }
        with atomic_path(args.stats, overwrite=args.overwrite) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return code
