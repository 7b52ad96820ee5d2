"""Before/after of the transformer's fused glue (commit c7ef00d) in ONE process, interleaved.

The old ``SelfAttention.forward`` / ``CrossAttnBlock.forward`` / ``apply_rope`` are read from git (``--old-rev``)
and swapped in and out of the same model round by round, so both paths see the same load:

    nice python benchmarks/transformer_glue_ab.py --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import types

import torch

from varestorer.benchmark.presets import bench_student
from varestorer.benchmark.timing import count_flops
from varestorer.transformer import blocks


def old_module(rev: str, path: str, name: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:{path}"], check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(name)
    exec(compile(source.replace("from __future__ import annotations\n", ""), path, "exec"), module.__dict__)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-rev", default="629d376")
    parser.add_argument("--model", default="default")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old = old_module(args.old_rev, "src/varestorer/transformer/blocks.py", "old_blocks")
    old.apply_rope = old_module(args.old_rev, "src/varestorer/transformer/rope.py", "old_rope").apply_rope
    new_forwards = (blocks.SelfAttention.forward, blocks.CrossAttnBlock.forward)
    old_forwards = (old.SelfAttention.forward, old.CrossAttnBlock.forward)

    def use(forwards: tuple) -> None:
        blocks.SelfAttention.forward, blocks.CrossAttnBlock.forward = forwards

    torch.manual_seed(0)
    student = bench_student(args.model)
    with torch.inference_mode():
        inputs = student.encode(torch.rand(1, 3, student.input_size, student.input_size)).tokens.inputs

        def call() -> torch.Tensor:
            return student.transformer(inputs, student.schedule, None, mask="full")

        use(old_forwards)
        reference, flops = call(), count_flops(call)
        use(new_forwards)
        diff = float((call() - reference).abs().max())
        cpu: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            for name, forwards in (("old", old_forwards), ("new", new_forwards)):
                use(forwards)
                start = time.process_time()
                call()
                cpu[name].append((time.process_time() - start) * 1000)
        use(new_forwards)
    print(f"{args.model}: {len(student.schedule)} scales, {flops / 1e9:.1f} GFLOP, max |new - old| = {diff:.2e}")
    for name, runs in cpu.items():
        ms = statistics.median(runs)
        rate = flops / 1e6 / ms
        print(f"{name}: median {ms:.0f} CPU ms ({rate:.1f} GFLOP per CPU s) over {[round(r) for r in runs]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
