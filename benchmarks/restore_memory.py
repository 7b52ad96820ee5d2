"""Peak memory and time of ``Restorer`` on a large input (default 2000x2000 at x4) on the CPU.

    python benchmarks/restore_memory.py --weights realesr-general-x4v3.param [--size 2000] [--tile 512]

Without ``--weights`` a random SRVGGNetCompact of the same width (64) but 2 hidden convolutions
runs the same pipeline (tiles, blending, quantisation): the peak is the same, the time is not.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.foreign.peers import load_peer
from varestorer.inference.restorer import Restorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="peer weights (ncnn .param, .pth, folder)")
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)
    model = load_peer(args.weights) if args.weights else SRVGGNetCompact(SRVGGConfig(num_conv=2))
    restorer = Restorer(model, device="cpu", tile=args.tile)
    start = time.perf_counter()
    out = restorer(image)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(
        f"{args.size}x{args.size} -> {out.shape[1]}x{out.shape[0]} tile {args.tile}: "
        f"{seconds:.1f} s, peak RSS {peak_mib:.0f} MiB"
    )


if __name__ == "__main__":
    main()
