"""Carry converted assets to a bare GPU machine inside the device's size limit: weight matrices as int8.

The device call's working tree (tracked files + carried folders) must stay under 64 MiB, and the LPIPS/DISTS
backbone alone (``vgg16-imagenet``, 59 MB in float32) would take most of it. ``pack`` writes each asset with its
large tensors (>= ``INT8_MIN_ELEMENTS``: VGG16's stages 4 and 5, 88% of it) as symmetric int8 per output
channel (``varestorer.storage``, the scheme of ``varestorer export --dtype int8``), mid-sized ones (>=
``FLOAT16_MIN_ELEMENTS``) as float16 and the rest as they are: 16.5 MB for VGG16. ``unpack`` (on the GPU
machine) turns them back into float32 assets in a cache folder, with manifests whose sha256 is the unpacked
file's, so that ``VARESTORER_CACHE`` serves them as if fetched. On 6 DRealSR crops this moves LPIPS-VGG and
DISTS by at most 6e-4 (the gradient to the image keeps a cosine of 0.998 / 0.933 to float32's; bf16 autocast
alone gives 0.954 / 0.944): docs/training.md, "GPU route of default model v3P".

    python recipes/carry_assets.py pack vgg16-imagenet lpips-vgg-v0.1 dists-weights -o local/gpu_v3p/assets
    python recipes/carry_assets.py unpack local/gpu_v3p/assets -o /tmp/varestorer-cache/assets
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from varestorer.assets.cache import asset_path, read_manifest, sha256_file
from varestorer.storage import METADATA_KEY, SCHEME, dequantize_state_dict, file_scheme, quantize_state_dict

CARRIED = "carried_as"  # manifest key: how the packed copy stores its tensors
INT8_MIN_ELEMENTS = 1_000_000
FLOAT16_MIN_ELEMENTS = 65_536


def pack(names: list[str], out: Path) -> None:
    """Each asset of the local cache as an int8 copy + its manifest in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = asset_path(name)
        state = load_file(str(source))
        small = {k for k, v in state.items() if v.numel() < INT8_MIN_ELEMENTS}
        packed = quantize_state_dict(state, keep=small)
        for k in small:
            if state[k].is_floating_point() and state[k].numel() >= FLOAT16_MIN_ELEMENTS:
                packed[k] = state[k].half()
        packed = {k: v.contiguous() for k, v in packed.items()}
        save_file(packed, str(out / f"{name}.safetensors"), metadata={METADATA_KEY: SCHEME})
        carried = f"{SCHEME} (>= {INT8_MIN_ELEMENTS} elements), float16 (>= {FLOAT16_MIN_ELEMENTS})"
        manifest = dict(read_manifest(name) or {}, **{CARRIED: carried})
        (out / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        written = (out / f"{name}.safetensors").stat().st_size
        print(f"{name}: {source.stat().st_size / 1e6:.1f} MB -> {written / 1e6:.1f} MB")


def unpack(packed: Path, out: Path) -> None:
    """Every packed asset in ``packed`` as a float32 asset in the cache folder ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(packed.glob("*.safetensors"))
    if not files:
        raise SystemExit(f"error: no .safetensors in {packed}")
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            declared = file_scheme(handle.metadata(), path) is not None
        state = dequantize_state_dict(load_file(str(path)), declared=declared, where=path)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        target = out / path.name
        save_file(state, str(target))
        manifest = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        manifest.update(converted_sha256=sha256_file(target), converted_bytes=target.stat().st_size)
        (out / f"{path.stem}.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        print(f"{path.stem}: unpacked to {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="int8 copies of assets from the local cache ($VARESTORER_CACHE)")
    packing.add_argument("names", nargs="+")
    packing.add_argument("-o", "--output", type=Path, required=True)
    unpacking = commands.add_parser("unpack", help="float32 assets from packed copies, into a cache's assets/")
    unpacking.add_argument("packed", type=Path)
    unpacking.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.names, args.output)
    else:
        unpack(args.packed, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
