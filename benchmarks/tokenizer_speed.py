"""Encode + quantize + decode time of a tokenizer preset (or checkpoint) at one image size, on CPU.

python benchmarks/tokenizer_speed.py --model small --size 512 --threads 2 --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from varestorer.tokenizer.autoencoder import MultiScaleTokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", help="tokenizer preset name or checkpoint folder")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if os.path.isdir(args.model):
        tokenizer = MultiScaleTokenizer.from_pretrained(args.model)
    else:
        tokenizer = MultiScaleTokenizer.from_preset(args.model)
    tokenizer.eval()
    x = torch.rand(1, 3, args.size, args.size) * 2 - 1
    schedule = tokenizer.default_schedule(args.size, args.size)
    wall, cpu = [], []
    with torch.inference_mode():
        tokenizer.decode(tokenizer.tokenize(x, schedule).f_hat)  # warm-up
        for _ in range(args.runs):
            w0, c0 = time.perf_counter(), time.process_time()
            tokenizer.decode(tokenizer.tokenize(x, schedule).f_hat)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    params = sum(p.numel() for p in tokenizer.parameters())
    print(
        f"{args.model} ({params:,} params) {args.size}px, {len(schedule)} scales, {args.threads} thread(s): "
        f"median {statistics.median(wall):.3f} s wall, {statistics.median(cpu):.3f} s CPU; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
