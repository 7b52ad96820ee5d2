"""``varestorer demo``: a local web page to restore a photo, compare before/after and download it."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default", help="checkpoint folder, .pth/.safetensors or embedded name (default: default)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 serves the whole network")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default: 7860)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.add_argument(
        "--max-pixels", type=int, default=1_000_000, help="refuse uploads with more pixels (default: 1000000)"
    )


def run(args: argparse.Namespace) -> int:
    if args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    if importlib.util.find_spec("gradio") is None:
        raise ValueError("the web demo needs gradio: pip install 'varestorer[demo]'")
    from varestorer import Restorer
    from varestorer.demo.app import launch, model_label

    restorer = Restorer.from_pretrained(args.model, device=args.device)
    print(f"varestorer demo: {model_label(restorer)}", file=sys.stderr)
    if args.host not in LOOPBACK:
        print(f"varestorer demo: serving on {args.host}: anyone who can reach this machine can use it", file=sys.stderr)

    def ready(url: str) -> None:
        print(f"varestorer demo: open {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    # Ctrl-C and a plain `kill` stop the server the same way: a running restore is cancelled at its next
    # tile, the temporary folder is removed, and the exit code is the shell's for the signal (130, 143).
    try:
        stopped_by = launch(
            restorer, host=args.host, port=args.port, share=args.share, max_pixels=args.max_pixels, on_ready=ready
        )
    except OSError as error:  # port in use, address not available
        raise ValueError(f"cannot serve on {args.host}:{args.port}: {error}") from None
    if stopped_by:
        print(f"varestorer demo: stopped by {signal.Signals(stopped_by).name}", file=sys.stderr)
        return 128 + stopped_by
    return 0
