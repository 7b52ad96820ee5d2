"""``varestorer restore``: restore files, folders and globs with a one-step model."""

from __future__ import annotations

import argparse
import sys

from varestorer.cli._batch import (
    add_device_arguments,
    add_io_arguments,
    prepare_batch,
    restorer_options,
    run_batch,
)


def _embedded_color_fix() -> str:
    """The embedded default's own colour fix, from its config.json (for the help text)."""
    from varestorer.checkpoint import read_config
    from varestorer.families import embedded_folder
    from varestorer.restore_spec import WAVELET_LEVELS

    folder = embedded_folder("default")
    try:
        config = read_config(folder)["config"] if folder is not None else None
    except (OSError, ValueError, KeyError):
        return "unknown"
    if config is None or "color_fix" not in config:
        return "unknown"
    fix = str(config["color_fix"])
    return f"{fix}, {config.get('color_fix_levels', WAVELET_LEVELS)} levels" if fix == "wavelet" else fix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint folder, official release folder, .pth/.safetensors, ncnn .param, or a Hugging Face Hub "
        "id owner/name (EvanEternal/VARestorer: the official release) (default: embedded model)",
    )
    parser.add_argument(
        "--scale", type=float, default=None, help="output/input size ratio, any float (default: native)"
    )
    add_device_arguments(parser)
    parser.add_argument(
        "--color-fix",
        default=None,
        choices=("none", "adain", "wavelet"),
        help="match the LQ's colours (default: the model's own, in its config.json: "
        f"{_embedded_color_fix()} for the embedded model; docs/default_model.md has the measurements)",
    )
    parser.add_argument(
        "--color-fix-levels",
        type=int,
        default=None,
        metavar="N",
        help="a-trous levels of the wavelet fix: the output keeps the detail finer than about 2**N output px and "
        "takes the coarser colours from the LQ (default: the model's own; 5, StableSR's, unless its config says)",
    )
    parser.add_argument("--prompt", default=None, help="text for models that read a prompt")
    parser.add_argument(
        "--caption-model",
        default=None,
        metavar="DIR",
        help="caption each image with this local transformers image-to-text model (e.g. BLIP) when no "
        "--prompt is given, and use the caption as the prompt (off by default)",
    )
    parser.add_argument(
        "--precleaner",
        default="none",
        help="none, default (the embedded realesr-general-x4v3), realesrgan-x4plus (fetched weights), an embedded "
        "peer name, or a path to pre-cleaner weights; for a model with its own pre-cleaner (the default) it takes "
        "that one's place (realesrgan-x4plus in the default: crisper lettering, ~7x the time per tile)",
    )


def _model_path(args: argparse.Namespace) -> str:
    from varestorer.families import EMBEDDED_MODELS

    if args.model:
        return args.model
    if "default" in EMBEDDED_MODELS:
        return "default"
    raise ValueError(
        "no default model is bundled yet; pass --model PATH (a checkpoint folder, .pth/.safetensors or ncnn .param)"
    )


def run(args: argparse.Namespace) -> int:
    from varestorer.inference.restorer import Restorer

    planned = prepare_batch(args)  # bad inputs and an unwritable -o are found before the model loads
    precleaner = None
    if args.precleaner != "none":
        from varestorer.foreign.peers import DEFAULT_PRECLEANER, load_precleaner

        spec = DEFAULT_PRECLEANER if args.precleaner == "default" else args.precleaner
        if spec == "realesrgan-x4plus":
            from varestorer.cli.baseline import _weights  # the same weights as `varestorer baseline`

            spec = str(_weights(argparse.Namespace(weights=None, method=spec)))
        precleaner = load_precleaner(spec)
    captioner = None
    if args.caption_model is not None:
        from varestorer.inference.restorer import default_device
        from varestorer.models.captioner import Captioner

        captioner = Captioner.from_pretrained(args.caption_model, device=args.device or default_device())
    restorer = Restorer.from_pretrained(
        _model_path(args),
        color_fix=args.color_fix,
        color_fix_levels=args.color_fix_levels,
        precleaner=precleaner,
        captioner=captioner,
        **restorer_options(args),
    )
    if args.prompt is not None and not restorer.spec.reads_prompts:
        raise ValueError(f"{type(restorer.model).__name__} takes no text prompt; drop --prompt")
    print(
        f"model {type(restorer.model).__name__} x{restorer.scale} on {restorer.device} ({restorer.dtype})",
        file=sys.stderr,
    )
    return run_batch(
        args,
        lambda array, tiles: restorer(array, scale=args.scale, prompt=args.prompt, progress=tiles),
        planned=planned,
    )
