"""``varestorer baseline``: peer outputs to compare against (bicubic, Lanczos, Real-ESRGAN)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from varestorer.cli._batch import (
    add_device_arguments,
    add_io_arguments,
    prepare_batch,
    restorer_options,
    run_batch,
)

METHODS = ("bicubic", "lanczos", "realesrgan-x4plus", "realesr-general-x4v3")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    parser.add_argument("--method", required=True, choices=METHODS, help="interpolation or peer network")
    parser.add_argument("--scale", type=float, default=4.0, help="output/input size ratio (default 4)")
    parser.add_argument(
        "--weights",
        default=None,
        help="network weights: ncnn .param/.bin, .pth, .safetensors or a folder "
        "(default: realesr-general-x4v3's embedded weights, x4plus's fetched asset)",
    )
    add_device_arguments(parser)


def resize_array(array: np.ndarray, scale: float, method: str) -> np.ndarray:
    """PIL bicubic/Lanczos resize of an ``(H, W, C)`` uint8/uint16 array, channel by channel in float."""
    height, width = array.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.BICUBIC if method == "bicubic" else Image.Resampling.LANCZOS
    peak = 65535 if array.dtype == np.uint16 else 255
    channels = [
        np.asarray(Image.fromarray(array[..., c].astype(np.float32), mode="F").resize(size, resample))
        for c in range(array.shape[2])
    ]
    return np.clip(np.stack(channels, axis=-1) + 0.5, 0, peak).astype(array.dtype)


def _weights(args: argparse.Namespace) -> Path:
    from varestorer.foreign.peers import EMBEDDED_PEERS, peer_weights

    if args.weights:
        return peer_weights(args.weights)
    if args.method in EMBEDDED_PEERS:
        return peer_weights(args.method)  # shipped inside the package (licence beside)
    try:
        from varestorer.assets import asset_path
    except ImportError:
        raise ValueError("realesrgan-x4plus: pass --weights PATH (ncnn .param/.bin or .pth)") from None
    return asset_path("realesrgan-x4plus")


def _network_only_options(args: argparse.Namespace) -> list[str]:
    """The options given that only a peer network uses, as the user spelled them."""
    given = {
        "--weights": args.weights is not None,
        "--device": args.device is not None,
        "--dtype": args.dtype != "auto",
        "--tile": args.tile is not None,
        "--tile-overlap": args.tile_overlap is not None,
        "--batch-size": args.batch_size != 1,
    }
    return [name for name, present in given.items() if present]


def run(args: argparse.Namespace) -> int:
    if not args.scale > 0:
        raise ValueError(f"--scale must be positive, got {args.scale}")
    if args.method in ("bicubic", "lanczos"):
        ignored = _network_only_options(args)
        if ignored:
            verb = "does" if len(ignored) == 1 else "do"
            print(
                f"warning: {', '.join(ignored)} {verb} not apply to {args.method} (a PIL resize on the CPU); ignored",
                file=sys.stderr,
            )
        return run_batch(args, lambda array, _: resize_array(array, args.scale, args.method), verb=args.method)
    from varestorer.foreign.peers import load_peer
    from varestorer.inference.restorer import Restorer

    planned = prepare_batch(args)
    restorer = Restorer(load_peer(_weights(args), arch=args.method), **restorer_options(args))
    return run_batch(
        args, lambda array, tiles: restorer(array, scale=args.scale, progress=tiles), verb=args.method, planned=planned
    )
