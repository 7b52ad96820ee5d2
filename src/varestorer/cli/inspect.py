"""``varestorer inspect``: architecture, parameter count and every tensor of a preset or checkpoint."""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from varestorer.checkpoint import load_state_dict, load_weights, read_config
from varestorer.config import config_from_dict, config_to_dict

# family -> ("module:PRESETS_DICT", "module:ModelClass"). One literal table: a new model family adds one
# line. Its presets are then reachable as "family:name", or as "name" alone when no other family has it.
# The model class is built as ``ModelClass(PRESETS_DICT[name])``.
MODEL_FAMILIES: dict[str, tuple[str, str]] = {
    "tokenizer": (
        "varestorer.tokenizer.config:TOKENIZER_PRESETS",
        "varestorer.tokenizer.autoencoder:MultiScaleTokenizer",
    ),
    "transformer": (
        "varestorer.transformer.config:TRANSFORMER_PRESETS",
        "varestorer.transformer.model:NextScaleTransformer",
    ),
    "student": ("varestorer.models.student_config:STUDENT_PRESETS", "varestorer.models.student:Student"),
    "taef2": ("varestorer.tokenizer.taef2:TAEF2_PRESETS", "varestorer.tokenizer.taef2:TAEF2Tokenizer"),
}

# Families whose presets reuse the backbone names (student:infinity-2b): reachable only as FAMILY:NAME.
QUALIFIED_ONLY = {"student"}

EPILOG = """\
TARGET is one of:
  a checkpoint folder (config.json + model.safetensors or its shards) or a .safetensors/.pth/.pt/.bin file;
  a preset, qualified as FAMILY:NAME (e.g. tokenizer:small, tokenizer:infinity-d32) or just NAME
  when only one family has it (e.g. infinity-d32). Presets are built on the meta device, so even
  multi-billion-parameter models are inspected instantly. Families: {families}.

"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG.format(families=", ".join(MODEL_FAMILIES))
    parser.add_argument("target", help="a checkpoint folder or file, or a preset name (see below)")
    parser.add_argument("--json", action="store_true", help="print JSON: {params, trainable, tensors}")
    parser.add_argument("--depth", type=int, default=3, help="module-tree depth shown (default 3)")
    parser.add_argument(
        "--lora-rank", type=int, default=None, help="for student presets: LoRA rank instead of the preset's"
    )


def _attribute(spec: str) -> Any:
    module_name, name = spec.split(":")
    return getattr(importlib.import_module(module_name), name)


def _family(name: str) -> tuple[dict[str, Any], type]:
    presets, model_class = MODEL_FAMILIES[name]
    return _attribute(presets), _attribute(model_class)


def resolve_preset(target: str) -> tuple[str, str]:
    """``FAMILY:NAME`` or an unambiguous ``NAME`` -> (family, name).

    Raises:
        ValueError: unknown family or preset, or a name several families share.
    """
    if ":" in target:
        family, name = target.split(":", 1)
        if family not in MODEL_FAMILIES:
            raise ValueError(f"unknown model family {family!r}; choose from {', '.join(MODEL_FAMILIES)}")
        presets, _ = _family(family)
        if name not in presets:
            raise ValueError(f"unknown {family} preset {name!r}; choose from {', '.join(presets)}")
        return family, name
    matches = [family for family in MODEL_FAMILIES if family not in QUALIFIED_ONLY and target in _family(family)[0]]
    if len(matches) > 1:
        raise ValueError(f"{target!r} is ambiguous: write one of {', '.join(f'{f}:{target}' for f in matches)}")
    if not matches:
        known = ", ".join(f"{f}:{n}" for f in MODEL_FAMILIES for n in _family(f)[0])
        raise ValueError(f"{target!r} is neither a file/folder nor a preset; presets: {known}")
    return matches[0], target


def build_on_meta(family: str, name: str, **changes: Any) -> nn.Module:
    """The preset's model with meta tensors (shapes only, no memory, no init cost)."""
    presets, cls = _family(family)
    config = replace(presets[name], **changes) if changes else presets[name]
    with torch.device("meta"):
        return cls(config)


def _model_for_config(meta: dict[str, Any]) -> nn.Module | None:
    """A meta-device model for a checkpoint folder's config.json, when its model_type is a known family."""
    for _, model_class in MODEL_FAMILIES.values():
        if model_class.rsplit(":", 1)[-1] == meta["model_type"]:
            cls = _attribute(model_class)
            with torch.device("meta"):
                return cls(config_from_dict(cls.config_class, meta["config"]))
    return None


def module_tree(model: nn.Module, depth: int) -> list[str]:
    """One line per module down to ``depth``: name, class, parameter count."""
    lines = []
    for name, module in model.named_modules():
        level = 0 if not name else name.count(".") + 1
        if level > depth:
            continue
        count = sum(p.numel() for p in module.parameters())
        label = name.rsplit(".", 1)[-1] if name else "(root)"
        lines.append(f"{'  ' * level}{label}: {type(module).__name__}  {count:,}")
    return lines


def _flatten(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + key] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _student_summary(model: nn.Module) -> str:
    """Trainable parameters of a student and their share (LoRA of the transformer; encoder; pre-cleaner)."""
    total = sum(p.numel() for p in model.parameters())
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    base = sum(p.numel() for n, p in model.transformer.named_parameters() if ".lora_" not in n)  # type: ignore[union-attr]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (
        f"student: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%); "
        f"LoRA {lora:,} = {100 * lora / base:.2f}% of the {base:,}-parameter transformer; "
        f"encoder and pre-cleaner {trainable - lora:,}"
    )


def run(args: argparse.Namespace) -> int:
    path = Path(args.target)
    model: nn.Module | None = None
    title = ""
    if path.exists():
        if path.is_dir():
            header = read_config(path)
            title = f"{header['model_type']}: {json.dumps(header['config'])}"
            tensors = _flatten(load_weights(path))
            model = _model_for_config(header)
        else:
            tensors = _flatten(load_state_dict(path))
        params = sum(t.numel() for t in tensors.values() if t.is_floating_point())
        trainable = params
    else:
        family, name = resolve_preset(args.target)
        if args.lora_rank is not None and family != "student":
            raise ValueError("--lora-rank applies to student presets (e.g. student:infinity-2b)")
        changes = {} if args.lora_rank is None else {"lora_rank": args.lora_rank, "lora_alpha": float(args.lora_rank)}
        model = build_on_meta(family, name, **changes)
        config = json.dumps(config_to_dict(model.config)) if hasattr(model, "config") else "{}"
        title = f"{family}:{name} ({type(model).__name__}, {config})"
        tensors = dict(model.state_dict())
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = {"params": params, "trainable": trainable, "tensors": {k: list(t.shape) for k, t in tensors.items()}}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    if title:
        print(title)
    if model is not None and any(".lora_" in n for n, _ in model.named_parameters()):
        print(_student_summary(model))
    if model is not None:
        print("architecture:")
        print("\n".join("  " + line for line in module_tree(model, args.depth)))
    print(f"{len(tensors)} tensors, {params:,} parameters ({trainable:,} trainable)")
    for name, shape in report["tensors"].items():
        print(f"  {name}  {tuple(shape)}")
    return 0
