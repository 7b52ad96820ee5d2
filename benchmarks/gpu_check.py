"""Every GPU measurement of issue 8 in one process; run through ``benchmarks/gpu_check.sh OUT_DIR``.

Writes ``OUT/env.json``, one ``OUT/<config>.json`` per measurement as soon as it is done (a timeout
keeps what finished), and ``OUT/summary.json`` with the H100 targets checked:
transformer one step <= 25 ms, end to end <= 40 ms, ratio multi/one >= 7 (``infinity-2b``, 512 px).

Order (cheapest and most important first): the no-host-sync check, eager bf16 batch 1 (with the
10-scale generation and Real-ESRGAN x4plus peers), eager batch 8, compiled batch 1, compiled batch 8.

On a CPU, ``--model tiny --size 64 --device cpu`` runs the same sequence in seconds (used by the tests).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_common beside this script

import torch  # noqa: E402
from gpu_common import count_host_syncs, free_memory, write_json  # noqa: E402

from varestorer.benchmark.bench import bench_peer, format_table, run_bench  # noqa: E402
from varestorer.benchmark.presets import bench_student  # noqa: E402

TARGETS = {"one_step_ms": 25.0, "end_to_end_ms": 40.0, "ratio": 7.0}


def sync_check(model: str, size: int, device: str, dtype: str) -> dict[str, object]:
    """Run one student step with CUDA's sync debug mode set to error: any host sync raises."""
    if not device.startswith("cuda"):
        return {"checked": False, "reason": "not a CUDA device"}
    student = bench_student(model, size=size, device=device).to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    lq = torch.rand(1, 3, size // 4, size // 4, device=device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        result = count_host_syncs(functools.partial(student, lq), trace_lines=6)
    del student
    free_memory()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="infinity-2b")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "python": sys.version.split()[0],
    }
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        env["sdpa"] = {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
        }
    write_json(args.out, "env", env)
    print(json.dumps(env), flush=True)

    summary: dict[str, object] = {"env": env, "targets": TARGETS, "results": {}, "errors": {}}
    try:
        summary["sync_check"] = sync_check(args.model, args.size, args.device, args.dtype)
    except Exception as error:  # keep going: the timings matter more
        summary["sync_check"] = {"checked": False, "error": repr(error)}
    print("sync check:", summary["sync_check"], flush=True)
    write_json(args.out, "summary", summary)

    batches = [int(b) for b in args.batches.split(",") if b]
    configs = [(b, False) for b in batches] + ([] if args.no_compile else [(b, True) for b in batches])
    for batch, compiled in configs:
        name = f"{args.model}_{args.size}_{args.dtype}_b{batch}{'_compiled' if compiled else ''}"
        t0 = time.perf_counter()
        try:
            result = run_bench(
                args.model,
                size=args.size,
                device=args.device,
                dtype=args.dtype,
                batch_size=batch,
                compile=compiled,
                runs=args.runs,
                warmup=args.warmup,
                peers=["bicubic", "realesrgan-x4plus"] if not compiled else [],
                multi_step=not compiled,  # generation is eager either way; measured in the eager runs
            )
            if not compiled and batch == batches[0]:
                lq = torch.rand(batch, 3, args.size // 4, args.size // 4, device=args.device)
                result["peers"]["realesrgan-x4plus_fp16"] = bench_peer(
                    "realesrgan-x4plus", lq, dtype="fp16" if args.device != "cpu" else "fp32",
                    warmup=args.warmup, runs=args.runs,
                )  # fmt: skip
                result["speedup_vs_peers"]["realesrgan-x4plus_fp16"] = (
                    result["peers"]["realesrgan-x4plus_fp16"]["ms"] / result["end_to_end_ms"]
                )
        except Exception as error:
            summary["errors"][name] = traceback.format_exc().splitlines()[-8:]  # type: ignore[index]
            print(f"{name}: FAILED {error!r}", flush=True)
            write_json(args.out, "summary", summary)
            free_memory()
            continue
        result["wall_s"] = time.perf_counter() - t0
        write_json(args.out, name, result)
        try:
            print(format_table(result), flush=True)
        except Exception as error:  # the JSON is what counts
            print(f"(table failed: {error!r})", flush=True)
        print(f"({name}: {result['wall_s']:.0f} s, {time.perf_counter() - started:.0f} s so far)\n", flush=True)
        eager = summary["results"].get(f"{args.model}_{args.size}_{args.dtype}_b{batch}")  # type: ignore[union-attr]
        multi_ms = result["multi_step_ms"] or (eager or {}).get("multi_step_ms")
        summary["results"][name] = {  # type: ignore[index]
            "one_step_ms": result["one_step_ms"],
            "end_to_end_ms": result["end_to_end_ms"],
            "end_to_end_ms_per_image": result["end_to_end_ms"] / batch,
            "multi_step_ms": multi_ms,
            "ratio": multi_ms / result["one_step_ms"] if multi_ms else None,
            "stages_ms": result["stages_ms"],
            "images_per_s": result["images_per_s"],
            "peak_mem_mb": result["peak_mem_mb"],
            "peers_ms": {k: v["ms"] for k, v in result["peers"].items()},
        }
        if batch == 1:
            row = summary["results"][name]  # type: ignore[index]
            row["meets"] = {  # type: ignore[index]
                "one_step_ms<=25": row["one_step_ms"] <= TARGETS["one_step_ms"],
                "end_to_end_ms<=40": row["end_to_end_ms"] <= TARGETS["end_to_end_ms"],
                "ratio>=7": row["ratio"] is not None and row["ratio"] >= TARGETS["ratio"],
            }
        write_json(args.out, "summary", summary)
        free_memory()
    summary["total_s"] = time.perf_counter() - started
    write_json(args.out, "summary", summary)
    print(json.dumps(summary["results"], indent=1), flush=True)
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
