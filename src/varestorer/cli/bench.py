"""``varestorer bench``: time the one-step restorer stage by stage against multi-step generation and peers;
with ``--train``, a few distillation steps and the memory model (benchmark/train_bench.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from varestorer.io.atomic import atomic_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="preset (tiny, small, infinity-125m, infinity-2b), student folder, or official:varestorer-2b (the "
        "authors' released model at its full shapes, random weights; official:tiny); leave out with --peers to "
        "time the peers alone",
    )
    parser.add_argument(
        "--depth", type=int, default=None, help="official:*: this many transformer blocks (e.g. 2 on a CPU)"
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        metavar="A,B,...",
        help="instead of --model: time encode+quantise and decode of these tokenizers side by side (embedded "
        "names such as default-tokenizer or default, tokenizer/teacher/student folders, or presets such as "
        "taef2:taef2 and tokenizer:small); --size defaults to 256",
    )
    parser.add_argument("--size", type=int, default=None, help="HQ size in px (LQ = size/4); default: the model's own")
    parser.add_argument("--schedule", default=None, help="token schedule override, e.g. 1,2,4,8,16,32 (square sides)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="torch.compile encoder, transformer and decoder")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per stage (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per stage")
    parser.add_argument("--peers", default="", help="comma list: bicubic,realesrgan-x4plus,realesr-general-x4v3")
    parser.add_argument(
        "--peer-weights",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="time a peer with these weights (as `varestorer baseline` loads them); repeatable; default: "
        "the embedded weights (realesr-general-x4v3), else random",
    )
    parser.add_argument("--no-multi-step", action="store_true", help="skip the autoregressive generation reference")
    parser.add_argument("--precleaner", action="store_true", help="presets: add the precleaner-1x stage")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    train = parser.add_argument_group("training (--train)")
    train.add_argument("--train", action="store_true", help="bench distillation steps (--runs steps after --warmup)")
    train.add_argument("--predict-only", action="store_true", help="--train: only the memory model (any machine)")
    train.add_argument("--lora-rank", type=int, default=32)
    train.add_argument("--activation-checkpointing", action="store_true", help="recompute blocks in the backward")
    train.add_argument(
        "--conv-checkpointing", action="store_true", help="also recompute the tokenizer encoder's/decoder's blocks"
    )
    train.add_argument(
        "--memory-snapshot", action="store_true", help="CUDA: the top allocations at the peak (torch memory history)"
    )
    train.add_argument("--separate-teacher", action="store_true", help="a teacher copy instead of the shared base")
    train.add_argument("--teacher-dtype", choices=("float32", "bfloat16"), default="float32")
    train.add_argument("--sharding", choices=("ddp", "fsdp", "fsdp_grad_op"), default="ddp")
    train.add_argument("--world-size", type=int, default=1, help="processes the prediction assumes (measured: 1)")
    train.add_argument("--lambda-perceptual", type=float, default=0.25, help="0 drops the LPIPS-VGG term")
    train.add_argument("--perceptual-crop", type=int, default=None)
    train.add_argument("--ema", action="store_true", help="count an EMA copy of the trainable weights")
    train.add_argument(
        "--recipe",
        type=Path,
        default=None,
        help="--train: a `train student` recipe's student, loss and [train] knobs on --model's teacher shapes "
        "(instead of the flags above; change them with --set); a recipe without a teacher ([job] init_from a merged "
        "student, e.g. recipes/finetune_default.toml) takes that student's shapes, and no --model",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="--train: override a recipe key as `train student --set` does, e.g. model.lq_bit_skip=true, "
        "loss.dists.weight=0.25; repeatable",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.json is not None and args.json.exists() and not args.overwrite:
        raise FileExistsError(f"{args.json} exists; pass --overwrite to replace it")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.tokenizer is not None:
        if args.model is not None or args.train or args.predict_only:
            raise ValueError("--tokenizer times tokenizers alone: leave out --model and --train")
        result = _tokenizer_bench(args)
    elif args.model is None and args.peers and not (args.train or args.predict_only):
        result = _peer_bench(args)  # the peers alone
    elif args.train or args.predict_only:
        if args.model is None and args.recipe is None:
            raise ValueError("--train needs --model (a preset such as tiny or small) or a --recipe without a teacher")
        result = _train_bench(args)
    elif args.model is None:
        raise ValueError("give --model (a restorer), --peers alone, or --tokenizer (tokenizers)")
    elif args.model.startswith("official:"):
        result = _official_bench(args)
    else:
        result = _inference_bench(args)
    if args.json is not None:
        with atomic_path(args.json, overwrite=args.overwrite) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _train_bench(args: argparse.Namespace) -> dict:
    from varestorer.benchmark.train_bench import format_train_table, run_train_bench
    from varestorer.benchmark.train_setup import RECIPE_PRECLEANER, recipe_setup
    from varestorer.training.config import read_recipe_tables
    from varestorer.training.student_recipe import parse_student_recipe

    if args.dtype == "fp16":
        raise ValueError("--train supports --dtype fp32 or bf16")
    if args.recipe is not None:
        tables, where = read_recipe_tables(args.recipe), args.recipe.name
    else:  # the flags, as the tables of a recipe (the student of recipes/student_infinity_2b.toml by default)
        where = "bench --train"
        tables = {
            "model": {
                "lora_rank": args.lora_rank,
                "lora_alpha": float(args.lora_rank),
                "precleaner": dict(RECIPE_PRECLEANER),
                **({"image_size": args.size} if args.size else {}),
            },
            "job": {"shared_teacher": not args.separate_teacher, "teacher_dtype": args.teacher_dtype},
            "train": {
                "batch_size": args.batch_size,
                "mixed_precision": "bf16" if args.dtype == "bf16" else "no",
                "activation_checkpointing": args.activation_checkpointing,
                "conv_checkpointing": args.conv_checkpointing,
                "sharding": args.sharding,
                "ema_decay": 0.999 if args.ema else None,
            },
            "loss": {
                "mse": {"weight": 0.5},
                "kl": {"weight": 0.1},
                "lpips": {"weight": args.lambda_perceptual, "crop": args.perceptual_crop},
            },
        }
    recipe = parse_student_recipe(tables, args.set, where=where)
    setup = recipe_setup(recipe, args.model, world_size=args.world_size)
    result = run_train_bench(
        setup,
        device=args.device,
        steps=args.runs,
        warmup=args.warmup,
        predict_only=args.predict_only,
        memory_snapshot=args.memory_snapshot,
    )
    print(format_train_table(result))
    return result


def _tokenizer_bench(args: argparse.Namespace) -> dict:
    from varestorer.benchmark.tokenizer_bench import format_tokenizer_table, run_tokenizer_bench
    from varestorer.inference.devices import check_device

    result = run_tokenizer_bench(
        [t.strip() for t in args.tokenizer.split(",") if t.strip()],
        size=args.size or 256,
        device=check_device(args.device),
        dtype=args.dtype,
        batch_size=args.batch_size,
        warmup=args.warmup,
        runs=args.runs,
    )
    print(format_tokenizer_table(result))
    return result


def _peer_bench(args: argparse.Namespace) -> dict:
    from varestorer.benchmark.peer_bench import format_peer_table, run_peer_bench

    result = run_peer_bench(
        [p for p in args.peers.split(",") if p],
        size=args.size or 256,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        runs=args.runs,
        warmup=args.warmup,
        peer_weights=_peer_weights(args.peer_weights),
    )
    print(format_peer_table(result))
    return result


def _timing_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options every one-step bench (student presets and folders, the official model) takes alike."""
    return {
        "device": args.device,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "compile": args.compile,
        "runs": args.runs,
        "warmup": args.warmup,
        "peers": [p for p in args.peers.split(",") if p],
        "peer_weights": _peer_weights(args.peer_weights),
    }


def _inference_bench(args: argparse.Namespace) -> dict:
    from varestorer.benchmark.bench import format_table, run_bench
    from varestorer.benchmark.presets import parse_schedule

    result = run_bench(
        args.model,
        size=args.size,
        schedule=parse_schedule(args.schedule) if args.schedule else None,
        multi_step=not args.no_multi_step,
        precleaner=args.precleaner,
        **_timing_options(args),
    )
    print(format_table(result))
    return result


def _official_bench(args: argparse.Namespace) -> dict:
    from varestorer.benchmark.bench import format_table
    from varestorer.benchmark.official_bench import run_official_bench

    if args.size is not None or args.schedule or args.precleaner:
        raise ValueError("official:* runs at its own 512 px and schedule: leave out --size, --schedule, --precleaner")
    result = run_official_bench(args.model, depth=args.depth, **_timing_options(args))
    print(format_table(result))
    print(f"output megapixels/s {result['megapixels_per_s']:.3f}  (transformer depth {result['depth']})")
    return result


def _peer_weights(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--peer-weights wants NAME=PATH, got {item!r}")
        if not Path(path).exists():
            raise FileNotFoundError(f"--peer-weights {name}: no such file {path}")
        out[name] = Path(path)
    return out
