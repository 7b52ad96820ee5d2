"""Reconstruct images through a tokenizer, per-scale bit statistics, and encode+quantise+decode speed.

The measurements of docs/tokenizer.md (2-core CPU). Tokenizer SPECs:

    student:DIR      the tokenizer inside a (merged) student folder (today's default: src/varestorer/weights/default)
    DIR              a tokenizer folder (any family; ``load_tokenizer``)
    taef2:DIR        the released TAEF2 files in DIR, calibrated on --calibrate crops (the untrained quantiser)

    python benchmarks/tokenizer_report.py recon SPEC INPUT_DIR OUT_DIR [--crop 256] [--no-quant]
    python benchmarks/tokenizer_report.py stats SPEC INPUT_DIR [--crop 256]      # JSON per scale
    python benchmarks/tokenizer_report.py speed SPEC [SPEC ...] [--size 256 --repeat 5 --threads 1 --clock thread]
    python benchmarks/tokenizer_report.py agree SPEC REFERENCE INPUT_DIR [--crop 256]  # shared token space?
    python benchmarks/tokenizer_report.py sheet OUT.png --names a,b,c COL_DIR [COL_DIR ...] --labels ...
    python benchmarks/tokenizer_report.py export TRAINED_MODEL_DIR OUT_DIR --license LICENSE-taesd.txt

``recon`` writes PNGs under the input's file names, the size of each input (reflect-padded to the
stride and cropped back; with --crop a centre crop of at most that side, a multiple of 8), so that
``varestorer evaluate --pred OUT_DIR --gt ...`` scores it; with --crop the crops used as GT go to
OUT_DIR/../gt_crop<N> when that folder does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from varestorer.io.images import list_images
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.tokenizer.taef2 import load_taef2


def calibration_crops(count: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    from varestorer.data.datasets import HQFolderDataset

    data = HQFolderDataset(["/work/shared/data/train", "local/data/wallpapers"], crop_size=size, hflip=False, seed=seed)
    picks = [round(i * (len(data) - 1) / max(count - 1, 1)) for i in range(count)]
    return torch.stack([data[i]["gt"] for i in picks]) * 2 - 1  # type: ignore[misc]


def open_tokenizer(spec: str, calibrate: int = 32):
    if spec.startswith("student:"):
        from varestorer.models.student import Student

        student = Student.from_pretrained(spec.split(":", 1)[1])
        tokenizer = MultiScaleTokenizer(student.config.tokenizer)
        tokenizer.encoder.load_state_dict(student.encoder.state_dict())
        tokenizer.decoder.load_state_dict(student.decoder.state_dict())
        tokenizer.quantizer.load_state_dict(student.quantizer.state_dict())
        return tokenizer.float().eval()
    if spec.startswith("taef2:"):
        tokenizer = load_taef2(spec.split(":", 1)[1])
        tokenizer.calibrate(calibration_crops(calibrate))
        return tokenizer.eval()
    return load_tokenizer(spec).float().eval()


def read(path: Path, crop: int | None) -> torch.Tensor:
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    if crop is not None:
        h, w = image.shape[:2]
        ch, cw = min(crop, h - h % 8), min(crop, w - w % 8)
        top, left = (h - ch) // 2, (w - cw) // 2
        image = image[top : top + ch, left : left + cw]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


@torch.no_grad()
def round_trip(tokenizer, x01: torch.Tensor, quantise: bool) -> torch.Tensor:
    s = tokenizer.stride
    h, w = x01.shape[-2:]
    padded = F.pad(x01 * 2 - 1, (0, (-w) % s, 0, (-h) % s), mode="reflect")
    f_hat = tokenizer.tokenize(padded).f_hat if quantise else tokenizer.encode(padded)
    return ((tokenizer.decode(f_hat)[..., :h, :w] + 1) / 2).clamp(0, 1)


def save(x01: torch.Tensor, path: Path) -> None:
    array = (x01[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def cmd_recon(args: argparse.Namespace) -> int:
    tokenizer = open_tokenizer(args.spec, args.calibrate)
    out = Path(args.out)
    gt_dir = out.parent / f"gt_crop{args.crop}" if args.crop else None
    write_gt = gt_dir is not None and not gt_dir.exists()
    for path in list_images([Path(args.input)], recursive=True):
        x = read(path, args.crop)
        save(round_trip(tokenizer, x, not args.no_quant), out / f"{path.stem}.png")
        if write_gt:
            save(x, gt_dir / f"{path.stem}.png")  # type: ignore[operator]
    return 0


@torch.no_grad()
def cmd_stats(args: argparse.Namespace) -> int:
    tokenizer = open_tokenizer(args.spec, args.calibrate)
    per_scale: dict[int, dict[str, list[float]]] = {}
    for path in list_images([Path(args.input)], recursive=True):
        x = read(path, args.crop) * 2 - 1
        if x.shape[-1] != args.crop or x.shape[-2] != args.crop:
            continue  # one schedule for all: only full-size crops
        schedule = tokenizer.default_schedule(*x.shape[-2:])
        tokens = tokenizer.tokenize(x, schedule)
        again = tokenizer.quantizer.quantize(tokens.f_hat, schedule)  # re-encode the quantiser's own f_hat
        for k, (bits, (h, w)) in enumerate(zip(tokens.labels, schedule)):
            grid = bits[0].T.reshape(-1, h, w).float()  # (d, h, w)
            row = per_scale.setdefault(k, {"grid": [h], "ones": [], "flip_h": [], "flip_v": [], "norm": [], "same": []})
            row["same"].append(float((again.labels[k] == bits).float().mean()))
            row["ones"].append(float(grid.mean()))
            if w > 1:
                row["flip_h"].append(float((grid[:, :, 1:] != grid[:, :, :-1]).float().mean()))
            if h > 1:
                row["flip_v"].append(float((grid[:, 1:] != grid[:, :-1]).float().mean()))
            row["norm"].append(tokens.residual_norms[k])
    table = [
        {
            "scale": k,
            "grid": row["grid"][0],
            "ones_fraction": statistics.fmean(row["ones"]),
            "flip_rate": statistics.fmean(row["flip_h"] + row["flip_v"]) if row["flip_h"] else None,
            "residual_norm": statistics.fmean(row["norm"]),
            "reencode_same_bits": statistics.fmean(row["same"]),
        }
        for k, row in sorted(per_scale.items())
    ]
    print(json.dumps(table, indent=1))
    return 0


@torch.no_grad()
def cmd_speed(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, args.size, args.size) * 2 - 1
    for spec in args.specs:
        tokenizer = open_tokenizer(spec, 4)
        times = {"encode": [], "quantise": [], "decode": []}
        clock = time.thread_time if args.clock == "thread" else time.perf_counter
        for _ in range(args.repeat + 1):
            t0 = clock()
            f = tokenizer.encode(x)
            t1 = clock()
            tokens = tokenizer.quantizer.quantize(f, tokenizer.default_schedule(args.size, args.size), with_norms=False)
            t2 = clock()
            tokenizer.decode(tokens.f_hat)
            t3 = clock()
            for name, value in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[name].append(value)
        # best of the runs after a warm-up: the least disturbed by other load on a shared machine
        row = {name: round(min(v[1:]), 3) for name, v in times.items()}
        row["total"] = round(sum(row.values()), 3)
        params = sum(p.numel() for p in tokenizer.parameters())
        print(json.dumps({"spec": spec, "params": params, "size": args.size, "threads": args.threads, **row}))
    return 0


@torch.no_grad()
def cmd_agree(args: argparse.Namespace) -> int:
    """Share of bits per scale that SPEC's tokens have in common with REFERENCE's on the same crops, and the
    MSE between their normalised latents f: does a distilled tokenizer share the reference's token space?"""
    tokenizer, reference = open_tokenizer(args.spec, args.calibrate), open_tokenizer(args.reference, args.calibrate)
    same: dict[int, list[float]] = {}
    mse = []
    for path in list_images([Path(args.input)], recursive=True):
        x = read(path, args.crop) * 2 - 1
        if x.shape[-1] != args.crop or x.shape[-2] != args.crop:
            continue
        f, f_ref = tokenizer.encode(x), reference.encode(x)
        mse.append(float((f - f_ref).pow(2).mean()))
        schedule = tokenizer.default_schedule(*x.shape[-2:])
        ours, theirs = (t.quantizer.quantize(g, schedule).labels for t, g in ((tokenizer, f), (reference, f_ref)))
        for k, (a, b) in enumerate(zip(ours, theirs)):
            same.setdefault(k, []).append(float((a == b).float().mean()))
    scales = [statistics.fmean(v) for _, v in sorted(same.items())]
    print(json.dumps({"latent_mse": statistics.fmean(mse), "same_bits_per_scale": [round(v, 3) for v in scales]}))
    return 0


def cmd_sheet(args: argparse.Namespace) -> int:
    """Rows: images (``--names`` stems); columns: the folders, each labelled; a ``--tile`` centre region."""
    from PIL import ImageDraw

    labels = args.labels.split(",")
    names = args.names.split(",")
    if len(labels) != len(args.columns):
        raise SystemExit("one label per column folder")
    t, pad, head = args.tile, 4, 18
    sheet = Image.new("RGB", (len(args.columns) * (t + pad) + pad, len(names) * (t + pad) + pad + head), "white")
    draw = ImageDraw.Draw(sheet)
    for j, label in enumerate(labels):
        draw.text((pad + j * (t + pad) + 2, 3), label, fill="black")
    for i, name in enumerate(names):
        for j, column in enumerate(args.columns):
            image = Image.open(Path(column) / f"{name}.png").convert("RGB")
            w, h = image.size
            left, top = (w - min(t, w)) // 2, (h - min(t, h)) // 2
            tile = image.crop((left, top, left + min(t, w), top + min(t, h)))
            sheet.paste(tile, (pad + j * (t + pad), head + pad + i * (t + pad)))
    sheet.save(args.out, optimize=True)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """A trained tokenizer folder -> fp16 safetensors + config.json + the MIT notice, into a new folder."""
    import shutil

    tokenizer = load_tokenizer(args.model).half()
    out = tokenizer.save_pretrained(args.out, source="TAEF2 (madebyollin/taesd, MIT) fine-tuned, docs/tokenizer.md")
    shutil.copyfile(args.license, out / Path(args.license).name)
    back = load_tokenizer(out)
    print(f"wrote {out}: {sum(p.numel() for p in back.parameters()):,} parameters, fp16")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    recon = sub.add_parser("recon")
    recon.add_argument("spec")
    recon.add_argument("input")
    recon.add_argument("out")
    recon.add_argument("--crop", type=int, default=None)
    recon.add_argument("--no-quant", action="store_true")
    stats = sub.add_parser("stats")
    stats.add_argument("spec")
    stats.add_argument("input")
    stats.add_argument("--crop", type=int, default=256)
    speed = sub.add_parser("speed")
    speed.add_argument("specs", nargs="+")
    speed.add_argument("--size", type=int, default=256)
    speed.add_argument("--repeat", type=int, default=5)
    speed.add_argument("--threads", type=int, default=2)
    speed.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="thread: CPU time of this thread (with --threads 1: robust to other jobs on a shared machine)",
    )
    tokens = sub.add_parser("agree")
    tokens.add_argument("spec")
    tokens.add_argument("reference")
    tokens.add_argument("input")
    tokens.add_argument("--crop", type=int, default=256)
    sheet = sub.add_parser("sheet")
    sheet.add_argument("out")
    sheet.add_argument("columns", nargs="+")
    sheet.add_argument("--names", required=True)
    sheet.add_argument("--labels", required=True)
    sheet.add_argument("--tile", type=int, default=192)
    export = sub.add_parser("export")
    export.add_argument("model")
    export.add_argument("out")
    export.add_argument("--license", required=True)
    for command in (recon, stats, speed, tokens):
        command.add_argument("--calibrate", type=int, default=32, help="taef2:DIR: calibration crops")
    args = parser.parse_args(argv)
    commands = {
        "recon": cmd_recon,
        "stats": cmd_stats,
        "speed": cmd_speed,
        "agree": cmd_agree,
        "sheet": cmd_sheet,
        "export": cmd_export,
    }
    try:
        return commands[args.command](args)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:  # bad input: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
