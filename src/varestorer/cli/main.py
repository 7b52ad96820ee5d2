"""Entry point of the ``varestorer`` command.

Each subcommand lives in its own module with two functions, ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so ``varestorer --help``
is instant and a broken optional dependency of one command never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from varestorer import __version__

# command -> (module, one-line help). One literal table; order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "restore": ("varestorer.cli.restore", "restore images (files, folders, globs) with a one-step model"),
    "baseline": ("varestorer.cli.baseline", "peer outputs: bicubic, Lanczos, Real-ESRGAN x4plus / general-x4v3"),
    "reconstruct": ("varestorer.cli.reconstruct", "round-trip images through a tokenizer to see how good it is"),
    "evaluate": ("varestorer.cli.evaluate", "PSNR/SSIM/LPIPS/DISTS/NIQE/BRISQUE of a folder of results"),
    "compare": ("varestorer.cli.compare", "a labelled side-by-side sheet of crops: LQ, each method or peer, GT"),
    "degrade": ("varestorer.cli.degrade", "build GT/LQ pairs with a synthetic degradation pipeline and a manifest"),
    "train": ("varestorer.cli.train", "train a tokenizer, teacher, student or pre-cleaner from a recipe"),
    "export": ("varestorer.cli.export", "merge a student's LoRA adapters into a self-contained restorer checkpoint"),
    "generate": ("varestorer.cli.generate", "sample images from a teacher (text-to-image next-scale model)"),
    "bench": ("varestorer.cli.bench", "time the one-step restorer stage by stage vs multi-step generation and peers"),
    "inspect": ("varestorer.cli.inspect", "print the architecture and tensors of a preset or checkpoint"),
    "assets": ("varestorer.cli.assets", "list, fetch and locate metric weights and peer models (offline cache)"),
    "demo": ("varestorer.cli.demo", "a local web page to restore a photo and compare before/after (gradio)"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: varestorer [--version] [--help] <command> [<args>]",
        "",
        "One-step real-world image super-resolution (VARestorer).",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'varestorer <command> --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"varestorer {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"varestorer: unknown command {command!r}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"varestorer {command}", description=help_)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("varestorer: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as error:
        # User errors get one line; --verbose keeps the traceback for bug reports.
        if args.verbose:
            raise
        print(f"varestorer {command}: error: {error}", file=sys.stderr)
        return 2
    finally:
        from varestorer.cli._batch import remove_empty_created_folders  # a run that wrote nothing leaves no folder

        remove_empty_created_folders()
