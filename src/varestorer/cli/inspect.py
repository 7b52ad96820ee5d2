"""``varestorer inspect``: architecture, parameter count and every tensor of a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from varestorer.checkpoint import WEIGHTS_NAME, load_state_dict, read_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a checkpoint folder, or a .safetensors/.pth/.pt file")
    parser.add_argument("--json", action="store_true", help="print JSON: {params, trainable, tensors}")


def _flatten(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + key] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
    return out


def run(args: argparse.Namespace) -> int:
    path = Path(args.target)
    header: dict = {}
    if path.is_dir():
        header = read_config(path)
        tensors = _flatten(load_state_dict(path / WEIGHTS_NAME))
    else:
        tensors = _flatten(load_state_dict(path))
    params = sum(t.numel() for t in tensors.values() if t.is_floating_point())
    report = {"params": params, "trainable": params, "tensors": {k: list(t.shape) for k, t in tensors.items()}}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    if header:
        print(f"{header['model_type']}: {json.dumps(header['config'])}")
    print(f"{len(tensors)} tensors, {params:,} parameters")
    for name, shape in report["tensors"].items():
        print(f"  {name}  {tuple(shape)}")
    return 0
