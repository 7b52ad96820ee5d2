"""``varestorer inspect``: architecture, parameter count and every tensor of a preset or checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from varestorer.checkpoint import check_state_dict, load_state_dict, load_weights, read_config, weights_scheme
from varestorer.config import config_from_dict, config_to_dict
from varestorer.families import FAMILIES, Family, family_named
from varestorer.storage import SCALE_SUFFIX, SCHEME, dequantize_state_dict, read_file_scheme, stored_dtypes

EPILOG = """\
TARGET is one of:
  an embedded model name (default), as restore --model takes it;
  an ncnn .param file;
  a checkpoint folder (config.json + model.safetensors or its shards) or a .safetensors/.pth/.pt/.bin file;
  a preset, qualified as FAMILY:NAME (e.g. tokenizer:small, tokenizer:infinity-d32) or just NAME
  when only one family has it (e.g. infinity-d32). Presets are built on the meta device, so even
  multi-billion-parameter models are inspected instantly. Families: {families}.

"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG.format(families=", ".join(f.name for f in _with_presets()))
    parser.add_argument("target", help="a checkpoint folder or file, or a preset name (see below)")
    parser.add_argument("--json", action="store_true", help="print JSON: {params, trainable, tensors}")
    parser.add_argument("--depth", type=int, default=3, help="module-tree depth shown (default 3)")
    parser.add_argument(
        "--lora-rank", type=int, default=None, help="for student presets: LoRA rank instead of the preset's"
    )


def _with_presets() -> list[Family]:
    """The registry's families that have presets (``varestorer.families``), in registry order."""
    return [entry for entry in FAMILIES.values() if entry.presets]


def resolve_preset(target: str) -> tuple[str, str]:
    """``FAMILY:NAME`` or an unambiguous ``NAME`` -> (family name, preset name).

    Raises:
        ValueError: unknown family or preset, or a name several families share.
    """
    if ":" in target:
        name, preset = target.split(":", 1)
        _, entry = family_named(name)
        presets = entry.preset_table()
        if preset not in presets:
            raise ValueError(f"unknown {name} preset {preset!r}; choose from {', '.join(presets) or 'none'}")
        return name, preset
    matches = [f.name for f in _with_presets() if not f.qualified_only and target in f.preset_table()]
    if len(matches) > 1:
        raise ValueError(f"{target!r} is ambiguous: write one of {', '.join(f'{f}:{target}' for f in matches)}")
    if not matches:
        known = ", ".join(f"{f.name}:{n}" for f in _with_presets() for n in f.preset_table())
        raise ValueError(f"{target!r} is neither a file/folder nor a preset; presets: {known}")
    return matches[0], target


def build_on_meta(family: str, name: str, **changes: Any) -> nn.Module:
    """The preset's model with meta tensors (shapes only, no memory, no init cost)."""
    _, entry = family_named(family)
    preset = entry.preset_table()[name]
    config = replace(preset, **changes) if changes else preset
    with torch.device("meta"):
        return entry.model_class()(config)


def _model_for_config(meta: dict[str, Any]) -> nn.Module | None:
    """A meta-device model for a checkpoint folder's config.json, when its model_type is a known family."""
    entry = FAMILIES.get(meta["model_type"])
    if entry is None:
        return None
    config = config_from_dict(entry.config_class(), meta["config"])
    with torch.device("meta"):
        try:
            return entry.model_class()(config)
        except TypeError:  # a composite (Teacher) is built from its parts, not from its config alone
            return None


def shape_problems(model: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> str | None:
    """What ``from_pretrained`` would refuse: missing, unexpected and mis-shaped tensors, or None."""
    try:
        check_state_dict(model, tensors, what=what)
    except ValueError as error:
        return str(error)
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
    transformer: Any = model.transformer
    base = sum(p.numel() for n, p in transformer.named_parameters() if ".lora_" not in n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (
        f"student: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%); "
        f"LoRA {lora:,} = {100 * lora / base:.2f}% of the {base:,}-parameter transformer; "
        f"other trainable parts ({_trainable_parts(model)}) {trainable - lora:,}"
    )


def _trainable_parts(model: nn.Module) -> str:
    """The top-level parts of ``model`` with trainable tensors other than LoRA (e.g. "encoder, decoder")."""
    parts = {n.split(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n}
    return ", ".join(sorted(parts - {"transformer"})) or "none"


def run(args: argparse.Namespace) -> int:
    from varestorer.families import embedded_folder

    path = embedded_folder(args.target) or Path(args.target)
    model: nn.Module | None = None
    title = ""
    problem: str | None = None
    dtypes: dict[str, str] | None = None  # as stored, for checkpoints
    storage = ""
    if path.exists():
        if path.is_dir():
            header = read_config(path)
            title = f"{header['model_type']}: {json.dumps(header['config'])}"
            raw = _flatten(load_weights(path, dequantize=False))
            tensors, dtypes, storage = _stored(raw, weights_scheme(path), path)
            model = _model_for_config(header)
            if model is not None and header["config"].get("merged", True):  # adapters hold only LoRA
                problem = shape_problems(model, tensors, str(path))
                if problem is not None:
                    model = None  # its tree would describe a model these weights do not fit
        elif path.suffix == ".param":  # an ncnn model, as restore --model takes it
            from varestorer.foreign.peers import load_peer

            model = load_peer(path)
            tensors = dict(model.state_dict())
        else:
            tensors, dtypes, storage = _stored(_flatten(load_state_dict(path)), read_file_scheme(path), path)
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
    report: dict[str, Any] = {
        "params": params,
        "trainable": trainable,
        "tensors": {k: list(t.shape) for k, t in tensors.items()},
    }
    if dtypes is not None:
        report["dtypes"] = dtypes
    if problem is not None:
        report["problem"] = problem
    if args.json:
        print(json.dumps(report, indent=1))
        return _warn(problem)
    if title:
        print(title)
    if model is not None and any(".lora_" in n for n, _ in model.named_parameters()):
        print(_student_summary(model))
    if model is not None:
        print("architecture:")
        print("\n".join("  " + line for line in module_tree(model, args.depth)))
    print(f"{len(tensors)} tensors, {params:,} parameters ({trainable:,} trainable)")
    if storage:
        print(f"stored as {storage}")
    for name, shape in report["tensors"].items():
        print(f"  {name}  {tuple(shape)}" + (f"  {dtypes.get(name, '?')}" if dtypes is not None else ""))
    return _warn(problem)


def _stored(raw: dict[str, Any], scheme: str | None, path: Path) -> tuple[dict[str, Any], dict[str, str], str]:
    """The tensors as the model sees them (int8 dequantised), each one's stored dtype, and a summary
    such as ``float32 x247, int8 x111 (int8-symmetric-per-channel, one float32 scale per output channel)``."""
    dtypes = stored_dtypes(raw)
    scaled = {name.removesuffix(SCALE_SUFFIX) for name in raw if name.endswith(SCALE_SUFFIX)}
    counts: dict[tuple[str, bool], int] = {}
    for name, dtype in dtypes.items():
        counts[dtype, name in scaled] = counts.get((dtype, name in scaled), 0) + 1
    note = f" ({SCHEME}, one float32 scale per output channel)"
    parts = [
        f"{dtype} x{n}{note if quantised else ''}"
        for (dtype, quantised), n in sorted(counts.items(), key=lambda c: -c[1])
    ]
    return dequantize_state_dict(raw, declared=scheme is not None, where=path), dtypes, ", ".join(parts)


def _warn(problem: str | None) -> int:
    """Exit 1 with a warning on stderr (after the listing) when the weights do not fit their config."""
    if problem is None:
        return 0
    print(f"varestorer inspect: warning: {problem}; restore would refuse this checkpoint", file=sys.stderr)
    return 1
