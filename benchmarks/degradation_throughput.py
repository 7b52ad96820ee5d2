"""Degradation throughput: (LQ, GT) pairs per second for 256x256 GT crops on the CPU.

Usage: python benchmarks/degradation_throughput.py [--images DIR] [--seconds 8] [--presets realesrgan mild]

Three execution paths per preset:
  per-sample   ``degrade`` one image at a time in this process (1 torch thread);
  batched      ``DegradationPipeline`` on batches of 16 in this process (1 torch thread);
  loader-2w    DataLoader with 2 worker processes running ``DegradedPairDataset`` (per-sample path),
               i.e. what a training loop gets on a 2-core machine.
GT crops come from ``--images`` (any folder of photos) or from a synthetic texture set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from varestorer.data.pairs import DegradedPairDataset  # noqa: E402
from varestorer.degradation.pipeline import DegradationPipeline, degrade  # noqa: E402


class CropBank(Dataset):
    """In-memory 256x256 GT crops (no file decoding in the timed loop)."""

    def __init__(self, images_dir: str | None, count: int = 64, size: int = 256) -> None:
        generator = torch.Generator().manual_seed(0)
        crops = []
        if images_dir:
            from varestorer.data.datasets import HQFolderDataset

            hq = HQFolderDataset(images_dir, crop_size=size, seed=0)
            crops = [hq[i % len(hq)]["gt"] for i in range(count)]
        else:
            yy, xx = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing="ij")
            for i in range(count):
                phase = torch.rand(3, generator=generator) * 6
                base = torch.stack([torch.sin(20 * xx * (1 + i % 5) + p) * torch.cos(13 * yy + p) for p in phase])
                texture = torch.rand(3, size, size, generator=generator) * 0.2
                crops.append((base * 0.35 + 0.45 + texture).clamp(0, 1))
        self.crops = crops

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"gt": self.crops[index % len(self.crops)]}


CPU_MS: dict[str, float] = {}  # CPU time of this process per pair, per measurement


def timed(run_once, seconds: float, name: str = "") -> float:
    """Pairs per second (wall clock) of ``run_once() -> pairs`` repeated for about ``seconds`` (after a warm-up).

    Also records this process's CPU milliseconds per pair in ``CPU_MS[name]``: on a machine shared
    with other jobs, ``cores * 1000 / CPU_MS`` estimates the rate the idle machine would reach.
    """
    run_once()
    pairs, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        pairs += run_once()
    if name:
        CPU_MS[name] = (time.process_time() - cpu_start) * 1000 / pairs
    return pairs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None, help="folder of photos for the GT crops (default: synthetic)")
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    parser.add_argument("--presets", nargs="+", default=["realesrgan", "mild"])
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bank = CropBank(args.images)
    print(f"cpus={os.cpu_count()} load before={os.getloadavg()[0]:.2f} torch={torch.__version__}")
    for preset in args.presets:
        generator = torch.Generator().manual_seed(0)
        counter = iter(range(10**9))

        def per_sample(preset=preset, generator=generator, counter=counter) -> int:
            degrade(bank[next(counter)]["gt"], preset, generator)
            return 1

        pipeline = DegradationPipeline.from_preset(preset)
        batch = torch.stack([bank[i]["gt"] for i in range(args.batch)])

        def batched(pipeline=pipeline, batch=batch, generator=generator) -> int:
            pipeline(batch, generator)
            return batch.shape[0]

        rates = {
            "per-sample": timed(per_sample, args.seconds, "per-sample"),
            "batched": timed(batched, args.seconds, "batched"),
        }
        # Workers start prefetching as soon as the iterator exists: create it only now, so they do not
        # compete with the in-process measurements above.
        loader = DataLoader(
            DegradedPairDataset(bank, preset, seed=0), batch_size=args.batch, num_workers=2, persistent_workers=True
        )
        batches = iter(loader)
        rates["loader-2w"] = timed(lambda batches=batches: next(batches)["lq"].shape[0], args.seconds)
        line = "  ".join(f"{k} {v:6.1f}" for k, v in rates.items())
        print(f"{preset:<11} pairs/s  {line}   (load now {os.getloadavg()[0]:.2f})")
        cpu = "  ".join(f"{k} {v:5.1f} ms/pair (~{2000 / v:4.0f}/s on 2 idle cores)" for k, v in CPU_MS.items())
        print(f"{'':<11} CPU time {cpu}")
        del batches, loader


if __name__ == "__main__":
    main()
