"""Convert realesr-general-x4v3 (ncnn, BSD-3) into the embedded folder ``weights/realesr-general-x4v3``.

The folder is a plain checkpoint folder (``config.json`` with model_type SRVGGNetCompact +
``model.safetensors`` in fp16), with the Real-ESRGAN licence and a SOURCE.md naming the source files
by sha256 and this command. ``--check IMAGE`` then compares the embedded copy with the ncnn model on
a real image (both computed in float32): the largest absolute difference and the PSNR between the two.

    python recipes/embed_x4v3.py /work/shared/weights/realesr-general-x4v3 \\
        src/varestorer/weights/realesr-general-x4v3 --check IMAGE [--overwrite]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from pathlib import Path

import torch

from varestorer.foreign.peers import load_peer
from varestorer.io.atomic import atomic_path

STEM = "upscayl-lite-4x"  # upscayl's name for the RealESRGAN_General_x4_v3 ncnn blob (same bytes)
LICENCE = "LICENSE-Real-ESRGAN.txt"
COMMAND = "python recipes/embed_x4v3.py SRC DST --check IMAGE"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(src: Path, dst: Path, *, overwrite: bool = False) -> None:
    """Write ``dst`` (config + fp16 weights + licence + SOURCE.md) from the ncnn pair in ``src``."""
    files = [src / f"{STEM}.param", src / f"{STEM}.bin", src / LICENCE]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{src}: missing {', '.join(missing)}")
    model = load_peer(files[0])
    model.save_pretrained(
        dst,
        overwrite=overwrite,
        dtype=torch.float16,
        source="realesr-general-x4v3 (Real-ESRGAN, Xintao Wang; BSD-3, LICENSE-Real-ESRGAN.txt), from ncnn fp16",
    )
    with atomic_path(dst / LICENCE, overwrite=True) as tmp:
        tmp.write_bytes(files[2].read_bytes())
    lines = [
        "# realesr-general-x4v3, embedded",
        "",
        "Origin: Real-ESRGAN's realesr-general-x4v3 (SRVGGNetCompact, 64 features, 32 convolutions, x4),",
        "BSD-3-Clause, Copyright (c) 2021 Xintao Wang (LICENSE-Real-ESRGAN.txt, shipped beside the weights).",
        "Source files: the ncnn pair from upscayl/upscayl resources/models (byte-identical to",
        "RealESRGAN_General_x4_v3.bin), converted to a torch state dict and stored as float16 safetensors:",
        "",
        *[f"- `{f.name}` sha256 `{sha256(f)}`" for f in files],
        "",
        f"Conversion: `{COMMAND}` (recipes/embed_x4v3.py).",
        "",
    ]
    with atomic_path(dst / "SOURCE.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")


@torch.no_grad()
def check(src: Path, dst: Path, image: Path) -> tuple[float, float]:
    """(max abs difference, PSNR in dB) between the ncnn model and the embedded copy on ``image``, in [0, 1]."""
    from varestorer.families import load_pretrained
    from varestorer.io.images import read_rgb

    array = read_rgb(image)
    lq = torch.from_numpy(array.astype("float32") / 255).permute(2, 0, 1)[None]
    reference = load_peer(src / f"{STEM}.param")(lq).clamp(0, 1)
    embedded = load_pretrained(dst, require="peer", what="a peer arch")(lq).clamp(0, 1)
    diff = (reference - embedded).abs()
    mse = float(diff.pow(2).mean())
    return float(diff.max()), (math.inf if mse == 0 else 10 * math.log10(1 / mse))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="folder with the ncnn pair and the licence")
    parser.add_argument("dst", type=Path, help="the embedded folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dst")
    parser.add_argument("--check", type=Path, default=None, help="an image to compare ncnn and embedded outputs on")
    args = parser.parse_args(argv)
    try:
        convert(args.src, args.dst, overwrite=args.overwrite)
        if args.check is not None:
            peak, psnr = check(args.src, args.dst, args.check)
            print(f"{args.check.name}: max abs diff {peak:.2e} (x255 = {peak * 255:.3f} levels), PSNR {psnr:.1f} dB")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
