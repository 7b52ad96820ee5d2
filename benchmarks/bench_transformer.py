"""Time a transformer preset on the CPU/GPU: one full-attention pass and K-scale cached sampling.

    python benchmarks/bench_transformer.py --preset small --size 256 512 --threads 2

Random weights (speed does not depend on values). Sampling uses a bitwise quantizer of the same d
and excludes the tokenizer's decoder.
"""

from __future__ import annotations

import argparse
import time

import torch

from varestorer.tokenizer.quantizer import BitwiseQuantizer
from varestorer.tokenizer.scales import infinity_schedule, token_count
from varestorer.transformer.config import transformer_preset
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.sampler import sample_scales
from varestorer.transformer.text import TextCondition


def timed(fn, repeats: int) -> str:
    """Mean wall time and process CPU time per call ("wall ms (cpu ms)"): on a shared, loaded box the CPU
    time over the threads used is the better estimate of the unloaded wall time."""
    fn()  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    wall, used = (time.perf_counter() - start) / repeats, (time.process_time() - cpu) / repeats
    return f"{wall * 1000:.0f} ms (cpu {used * 1000:.0f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = NextScaleTransformer(transformer_preset(args.preset)).to(device).eval()
    quantizer = BitwiseQuantizer(model.config.token_dim)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.preset}: {params / 1e6:.2f}M parameters, {args.threads} thread(s), {device}")
    text = TextCondition(torch.randn(1, 8, model.config.text_dim, device=device), torch.tensor([8], device=device))
    for size in args.size:
        schedule = infinity_schedule(size, size)
        L = token_count(schedule)
        inputs = torch.randn(1, L - 1, model.config.token_dim, device=device)
        with torch.inference_mode():
            full = timed(lambda: model(inputs, schedule, None, mask="full"), args.repeats)  # noqa: B023
            causal = timed(lambda: model(inputs, schedule, None, mask="causal"), args.repeats)  # noqa: B023
        sample = timed(lambda: sample_scales(model, quantizer, schedule, batch_size=1), args.repeats)  # noqa: B023
        guided = timed(lambda: sample_scales(model, quantizer, schedule, text, cfg_scale=3.0), args.repeats)  # noqa: B023
        print(
            f"{size}px {len(schedule)} scales {L} tokens: one full-attention pass {full}, "
            f"block-causal pass {causal}, {len(schedule)}-scale sampling {sample}, with CFG {guided}"
        )


if __name__ == "__main__":
    main()
