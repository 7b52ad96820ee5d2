"""``varestorer generate``: sample images from a teacher folder (tokenizer + transformer)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="teacher folder (config.json, tokenizer/, transformer/)")
    parser.add_argument("--prompt", help="caption (needs a teacher with a text encoder); default: unconditional")
    parser.add_argument("-n", "--num-images", type=int, default=4, help="images to generate (default 4)")
    parser.add_argument("-o", "--output", required=True, help="output folder for 000.png, 001.png, ...")
    parser.add_argument("--size", type=int, help="square output size in px (default: the teacher's image_size)")
    parser.add_argument("--cfg", type=float, help="classifier-free guidance weight (default: the teacher's)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: the teacher's)")
    parser.add_argument("--top-p", type=float, help="nucleus per bit (default: the teacher's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output images")


def run(args: argparse.Namespace) -> int:
    from varestorer.inference.devices import check_device
    from varestorer.io.images import write_image
    from varestorer.models.teacher import Teacher

    check_device(args.device)
    if args.num_images < 1 or args.batch_size < 1:
        raise ValueError("--num-images and --batch-size must be at least 1")
    output = Path(args.output)
    targets = [output / f"{i:03d}.png" for i in range(args.num_images)]
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    teacher = Teacher.from_pretrained(args.model, device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    for start in range(0, args.num_images, args.batch_size):
        count = min(args.batch_size, args.num_images - start)
        images = teacher.generate(
            [args.prompt] * count if args.prompt else None,
            count,
            height=args.size,
            cfg_scale=args.cfg,
            temperature=args.temperature,
            top_p=args.top_p,
            generator=generator,
        )
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        for offset, array in enumerate(pixels.numpy()):
            write_image(targets[start + offset], np.ascontiguousarray(array), overwrite=args.overwrite)
    print(f"wrote {args.num_images} image(s) to {output}")
    return 0
