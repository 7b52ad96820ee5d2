"""Shared batch runner of ``restore`` and ``baseline``: inputs -> outputs, per-file errors, summary.

Bad input never stops a batch: every file that cannot be read, processed or written is reported in
one line and the rest go on; the exit code is 1 when any file failed. Outputs are written
atomically; an input is never overwritten; an existing output is kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from varestorer.cli._progress import Progress
from varestorer.io.atomic import disk_full_error, is_disk_full, remove_orphans
from varestorer.io.image_file import MULTI_FRAME_SUFFIXES, read_image_file, write_image_file
from varestorer.io.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageReadError,
    MetadataDroppedWarning,
    list_images,
)

OUTPUT_EXTENSIONS = ("auto", "png", "jpg", "webp", "tif", "bmp", "gif")


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the results")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders (kept in OUTDIR)")
    parser.add_argument("--suffix", default="", help="appended to each output file stem (default: none)")
    parser.add_argument("--ext", default="auto", choices=OUTPUT_EXTENSIONS, help="output format (auto: as input)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (inputs never)")
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger inputs (decompression bombs)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress (a bar on a terminal, else a line per file)"
    )


def plan(args: argparse.Namespace) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(input, output) pairs, and (name, reason) for inputs that cannot even be planned."""
    outdir = Path(args.output)
    pairs: list[tuple[Path, Path]] = []
    failures: list[tuple[str, str]] = []
    seen: dict[Path, Path] = {}
    for item in args.inputs:
        try:
            files = list_images([item], recursive=args.recursive)
        except FileNotFoundError as error:
            failures.append((item, str(error)))
            continue
        if not files:
            failures.append((item, "no images in this folder" + ("" if args.recursive else " (--recursive?)")))
            continue
        root = Path(item) if Path(item).is_dir() else None
        for source in files:
            relative = source.relative_to(root).parent if root is not None else Path()
            ext = source.suffix.lower() if args.ext == "auto" else "." + args.ext
            if ext not in IMAGE_EXTENSIONS:
                ext = ".png"
            target = outdir / relative / f"{source.stem}{args.suffix}{ext}"
            resolved = target.resolve()
            if resolved == source.resolve():
                failures.append((str(source), "output path is the input itself; choose another -o or --suffix"))
            elif resolved in seen and seen[resolved] != source.resolve():
                failures.append((str(source), f"output {target} would also be written by {seen[resolved]}"))
            elif resolved not in seen:
                seen[resolved] = source.resolve()
                pairs.append((source, target))
    return pairs, failures


def earlier_outputs(pairs: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Split off inputs that are the output of another input (``a_x4.png`` beside ``a.png`` when
    restoring into the input folder with ``--suffix _x4``): (pairs to run, (input, its source))."""
    source_of = {target.resolve(): source for source, target in pairs}
    keep, earlier = [], []
    for source, target in pairs:
        origin = source_of.get(source.resolve())
        if origin is not None and origin.resolve() != source.resolve():
            earlier.append((source, origin))
        else:
            keep.append((source, target))
    return keep, earlier


CREATED_FOLDERS: list[Path] = []
"""Output folders this process created (deepest first), so that a run that writes nothing leaves none behind."""


def remove_empty_created_folders() -> None:
    """Remove the folders :func:`check_writable` created that are still empty (a refused or failed run)."""
    while CREATED_FOLDERS:
        folder = CREATED_FOLDERS.pop(0)
        with contextlib.suppress(OSError):  # not empty: the run wrote something, or another process did
            folder.rmdir()


def check_writable(folders: list[Path]) -> None:
    """Create each output folder and write a probe file there, before any work (the CLI removes the folders
    it created again if the run leaves them empty: :func:`remove_empty_created_folders`).

    Raises:
        PermissionError: a folder cannot be created or written (one line naming it and why).
    """
    for folder in dict.fromkeys(folders):
        try:
            missing = [f for f in (folder, *folder.parents) if not f.exists()]
            folder.mkdir(parents=True, exist_ok=True)
            CREATED_FOLDERS.extend(missing)  # deepest first
            remove_orphans(folder)  # temporaries a killed earlier run left behind
            fd, probe = tempfile.mkstemp(prefix=".varestorer-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise PermissionError(f"cannot write to {folder}: {error.strerror or error}") from None


class BatchPlan(NamedTuple):
    pairs: list[tuple[Path, Path]]  # (input, output) to run
    failures: list[tuple[str, str]]  # (name, reason) already failed while planning
    earlier: int  # inputs that are outputs of an earlier run (not run, reported apart)


def prepare_batch(args: argparse.Namespace) -> BatchPlan:
    """Plan the batch, report what cannot run and check the output folders are writable: call it
    before loading a model so that a wrong ``-o`` costs nothing."""
    pairs, failures = plan(args)
    pairs, earlier = earlier_outputs(pairs)
    for name, reason in failures:
        print(f"FAILED {name}: {reason}", file=sys.stderr)
    for source, origin in earlier:
        print(f"skipped {source}: an output of {origin.name} (an earlier run), not an input", file=sys.stderr)
    check_writable([target.parent for _, target in pairs] or [Path(args.output)])
    return BatchPlan(pairs, failures, len(earlier))


def run_batch(
    args: argparse.Namespace,
    process: Callable[[np.ndarray, Callable[[int, int], None]], np.ndarray],
    *,
    verb: str = "restored",
    planned: BatchPlan | None = None,
) -> int:
    """Apply ``process(array, progress)`` to every planned input and write the results; print failures
    and a summary. ``progress(done_tiles, total_tiles)`` is the tile callback of ``Restorer``;
    ``planned`` is the result of an earlier ``prepare_batch(args)``."""
    pairs, failures, earlier = planned if planned is not None else prepare_batch(args)
    failures, skipped = list(failures), 0
    done, start = 0, time.perf_counter()
    with Progress(len(pairs), desc=verb, quiet=getattr(args, "quiet", False)) as progress:
        for source, target in pairs:
            progress.start(str(source))
            if target.exists() and not args.overwrite:
                skipped += 1
                progress.write(f"skipped {source}: {target} exists (use --overwrite)")
                progress.finish("skipped")
                continue
            try:
                image = read_image_file(source, max_pixels=args.max_pixels)
                count = len(image.frames)
                if count > 1 and target.suffix.lower() not in MULTI_FRAME_SUFFIXES:
                    raise ValueError(f"{count} frames do not fit in a {target.suffix} file; use --ext gif, png or tif")
                results = [
                    process(frame, _frame_tiles(progress.tiles, k, count)) for k, frame in enumerate(image.frames)
                ]
                with warnings.catch_warnings(record=True) as dropped:
                    warnings.simplefilter("always", MetadataDroppedWarning)
                    write_image_file(target, results, image, overwrite=args.overwrite)
                for warning in dropped:
                    if issubclass(warning.category, MetadataDroppedWarning):
                        progress.write(f"warning {target}: {warning.message}")
                    else:
                        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
                done += 1
                progress.finish(f"{verb} {count} frames of" if count > 1 else verb)
            except FileExistsError:  # another run (e.g. a second restore into this folder) wrote it meanwhile
                skipped += 1
                progress.write(f"skipped {source}: {target} was written meanwhile by another run (use --overwrite)")
                progress.finish("skipped")
            except OSError as error:
                if is_disk_full(error, target.parent):  # every later file would fail the same way: stop here
                    progress.finish("failed")
                    raise disk_full_error(
                        target.parent,
                        f"{target.name} ({done} of {len(pairs)} written)",
                        "free some space and run again (files already written are skipped)",
                    ) from None
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                failures.append((str(source), reason))
                progress.write(f"FAILED {source}: {reason}")
                progress.finish("failed")
            except (ImageReadError, ValueError, RuntimeError) as error:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                failures.append((str(source), reason))
                progress.write(f"FAILED {source}: {reason}")
                progress.finish("failed")
    seconds = time.perf_counter() - start
    passed_over = f", {earlier} earlier output(s) not taken as inputs" if earlier else ""
    print(
        f"{verb} {done}, skipped {skipped} (exist){passed_over}, failed {len(failures)} in {seconds:.1f} s"
        f" -> {args.output}"
    )
    if failures:
        print("failed: " + ", ".join(name for name, _ in failures), file=sys.stderr)
        return 1
    return 0


def _frame_tiles(tiles: Callable[[int, int], None], index: int, count: int) -> Callable[[int, int], None]:
    """Frame ``index`` of ``count``'s tile callback as part of one count over all frames."""
    return lambda done, total: tiles(index * total + done, count * total)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, default=None, help="LQ tile size in pixels (default: model-dependent)")
    parser.add_argument(
        "--tile-overlap",
        type=int,
        default=None,
        help="overlap of tiles in LQ pixels (default: the model's own, else a quarter of the tile)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"), help="default: bf16 on CUDA"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="tiles run at once")


def restorer_options(args: argparse.Namespace) -> dict:
    return {
        "device": args.device,
        "dtype": None if args.dtype == "auto" else args.dtype,
        "tile": args.tile,
        "tile_overlap": args.tile_overlap,
        "batch_size": args.batch_size,
    }
