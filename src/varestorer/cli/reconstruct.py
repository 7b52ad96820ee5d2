"""``varestorer reconstruct``: round-trip images through a tokenizer to see how good it is.

Each input goes encode -> quantize over the schedule -> decode at its own size and is written under
its own file name, so ``varestorer evaluate --pred OUTDIR --gt INPUTDIR`` scores the tokenizer. The
round trip is :class:`varestorer.inference.reconstruction.Reconstructor`; this module parses the
arguments, prints and writes.
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
    from varestorer.inference.reconstruction import Reconstructor, parse_scales
    from varestorer.io.atomic import atomic_path
    from varestorer.tokenizer.statistics import format_statistics

    if args.stats and parse_scales(args.scales).kind == "none":
        raise ValueError("--stats needs tokens; --scales none skips the quantizer")
    if args.stats and Path(args.stats).exists() and not args.overwrite:
        raise FileExistsError(f"{args.stats} exists; pass --overwrite to replace it")
    names = ("scales", "tile", "tile_overlap", "device", "dtype", "batch_size")
    options = {name: getattr(args, name) for name in names}
    reconstructor = Reconstructor(args.model, **options)
    if reconstructor.caveat:
        print(f"warning: {reconstructor.caveat}", file=sys.stderr)
    quiet = getattr(args, "quiet", False)
    if not quiet:
        print(reconstructor.describe(), file=sys.stderr)
    code = run_batch(args, reconstructor, verb="reconstructed")
    stats = reconstructor.statistics()
    if stats and not quiet:
        print(format_statistics(stats))
    if args.stats:
        with atomic_path(args.stats, overwrite=args.overwrite) as tmp:
            tmp.write_text(json.dumps(reconstructor.report(), indent=2) + "\n", encoding="utf-8")
    return code
