"""The official VARestorer on a GPU (issue 30), in one process; run through ``benchmarks/gpu_official.sh OUT``.

The released model at its full shapes with random weights (``official:varestorer-2b``, no files), at the
official precision per stage (encoder float32, the rest bf16 autocast), built once. In order, each
result written to ``OUT/<name>.json`` as soon as it is done (a timeout keeps what finished):

1. the no-host-sync check: one pass under ``torch.cuda.set_sync_debug_mode("error")``;
2. eager, batch 1 (one 128 px LQ tile = one 512 px pass), with Real-ESRGAN x4plus at the same output size
   (bf16 and fp16 autocast) beside it;
3. eager at the other batch sizes (tiles of one image through the model at once);
4. compiled (``OfficialVARestorer.compile``: each stage's modules) at batch 1 and at the eager batch with
   the most output megapixels per second; with ``--cuda-graphs`` also ``mode="reduce-overhead"`` there.

``OUT/summary.json`` collects ms per pass, ms per tile, megapixels per second and the stages of each run.
On a CPU, ``--model official:tiny --device cpu --compile-backend eager`` runs the same sequence in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_common beside this script

import torch  # noqa: E402
from gpu_common import count_host_syncs, free_memory, write_json  # noqa: E402

from varestorer.benchmark.bench import bench_peer, format_table  # noqa: E402
from varestorer.benchmark.official_bench import official_bench_model, time_official_model  # noqa: E402


def sync_check(model: Any, device: torch.device) -> dict[str, object]:
    """One whole pass with CUDA's sync debug mode set to error: any host sync raises."""
    if device.type != "cuda":
        return {"checked": False, "reason": "not a CUDA device"}
    S, s = model.config.image_size, model.config.scale
    lq = torch.rand(2, 3, S // s, S // s, device=device)
    with torch.inference_mode():
        return count_host_syncs(lambda: model(lq, streams=[0, 1]))


def _row(result: dict[str, Any]) -> dict[str, Any]:
    batch = result["batch_size"]
    return {
        "batch_size": batch,
        "compile": result["compile"],
        "ms_per_pass": result["end_to_end_ms"],
        "ms_per_tile": result["end_to_end_ms"] / batch,
        "megapixels_per_s": result["megapixels_per_s"],
        "stages_ms": result["stages_ms"],
        "peak_mem_mb": result["peak_mem_mb"],
        "peers_ms_per_tile": {k: v["ms"] / batch for k, v in result["peers"].items()},
        "peers_megapixels_per_s": {
            k: batch * result["size"] ** 2 / 1e6 * 1000 / v["ms"] for k, v in result["peers"].items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="official:varestorer-2b")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", default="1,4,8,16", help="eager batch sizes; the first is the baseline")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: a CPU test)")
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also compile with mode=reduce-overhead (CUDA graphs per stage) at the best eager batch",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    device = torch.device(args.device)
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "python": sys.version.split()[0],
        "model": args.model,
        "dtype": args.dtype,
    }
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    write_json(args.out, "env", env)
    print(json.dumps(env), flush=True)

    summary: dict[str, Any] = {"env": env, "results": {}, "errors": {}}
    t0 = time.perf_counter()
    model = official_bench_model(args.model, depth=args.depth, device=device, dtype=args.dtype)
    summary["build_s"] = time.perf_counter() - t0
    try:
        summary["sync_check"] = sync_check(model, device)
    except Exception as error:  # keep going: the timings matter more
        summary["sync_check"] = {"checked": False, "error": repr(error)}
    print("sync check:", summary["sync_check"], flush=True)
    write_json(args.out, "summary", summary)

    batches = [int(b) for b in args.batches.split(",") if b]

    def run(batch: int, compiled: bool, mode: str | None = None) -> dict[str, Any] | None:
        name = f"official_{args.dtype}_b{batch}{'_compiled' if compiled else ''}{f'_{mode}' if mode else ''}"
        options = {"backend": args.compile_backend, **({"mode": mode} if mode else {})}
        t0 = time.perf_counter()
        try:
            peers = ["realesrgan-x4plus"] if batch == batches[0] and not compiled else []
            result = time_official_model(
                model,
                args.model,
                dtype=args.dtype,
                batch_size=batch,
                compile=options if compiled else False,
                runs=args.runs,
                warmup=args.warmup,
                peers=peers,
            )
            if peers and device.type == "cuda":
                S, s = model.config.image_size, model.config.scale
                lq = torch.rand(batch, 3, S // s, S // s, device=device)
                result["peers"]["realesrgan-x4plus_fp16"] = bench_peer(
                    "realesrgan-x4plus", lq, dtype="fp16", warmup=args.warmup, runs=args.runs
                )
        except Exception as error:
            summary["errors"][name] = traceback.format_exc().splitlines()[-8:]
            print(f"{name}: FAILED {error!r}", flush=True)
            write_json(args.out, "summary", summary)
            free_memory()
            return None
        result["wall_s"] = time.perf_counter() - t0
        write_json(args.out, name, result)
        try:
            print(format_table(result), flush=True)
        except Exception as error:  # the JSON is what counts
            print(f"(table failed: {error!r})", flush=True)
        print(f"({name}: {result['wall_s']:.0f} s, {time.perf_counter() - started:.0f} s so far)\n", flush=True)
        summary["results"][name] = _row(result)
        write_json(args.out, "summary", summary)
        free_memory()
        return result

    eager = {batch: run(batch, compiled=False) for batch in batches}
    done = {b: r for b, r in eager.items() if r is not None}
    if done:
        best = max(done, key=lambda b: done[b]["megapixels_per_s"])
        summary["best_eager_batch"] = best
        if not args.no_compile:
            # Compiled once, then re-run at the best batch (a new shape: recompiles under the same guards).
            for batch in dict.fromkeys([batches[0], best]):
                run(batch, compiled=True)
            if args.cuda_graphs:
                run(best, compiled=True, mode="reduce-overhead")
    summary["total_s"] = time.perf_counter() - started
    write_json(args.out, "summary", summary)
    print(json.dumps(summary["results"], indent=1), flush=True)
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
