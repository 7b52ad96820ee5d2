"""``varestorer train JOB --config RECIPE``: run a training job (single process or under torchrun)."""

from __future__ import annotations

import argparse
import importlib
import json

# job -> (module with main(recipe, *, resume, overrides) -> int, one-line help). One literal table.
JOBS: dict[str, tuple[str, str]] = {
    "tokenizer": ("varestorer.training.train_tokenizer", "train a MultiScaleTokenizer on image folders"),
    "student": ("varestorer.training.train_student", "distil the one-step student from a teacher (KL + LPIPS + MSE)"),
    "teacher": ("varestorer.training.train_teacher", "train a next-scale teacher transformer on image folders"),
    "precleaner": ("varestorer.training.train_precleaner", "train the same-size pre-cleaner on degraded HQ crops"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", choices=list(JOBS), help="; ".join(f"{k}: {v[1]}" for k, v in JOBS.items()))
    parser.add_argument(
        "--config", required=True, help="recipe file (.toml or .json), e.g. recipes/tokenizer_small.toml"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when available)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one recipe value, e.g. --set train.max_steps=100 (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(JOBS[args.job][0])
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={json.dumps(args.device)}")
    return int(module.main(args.config, resume=args.resume, overrides=overrides))
