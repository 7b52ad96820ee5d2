"""Curate a set of training photos out of unpacked packages: scan, de-duplicate, contact sheet, build.

`recipes/fetch_photos.sh` is the one user of `build`; `scan` is how the list it reads
(`recipes/photos.tsv`) was made: it lists every image of at least `--min-short-side` px in the unpacked
packages, folds the same picture stored at several resolutions into its largest copy, and draws a
labelled contact sheet to judge by eye which candidates are real photographs.

    python recipes/photo_set.py scan UNPACKED/ --sheet local/photo_candidates.png
    python recipes/photo_set.py build --list recipes/photos.tsv --unpacked UNPACKED/ --dest local/data/photos

`UNPACKED/<package>/` holds each package's files as `dpkg-deb -x` lays them out. The list names each
kept file by package, version, path inside the package, licence, name in the set and sha256, so a rerun
keeps exactly the same files or stops at the first one that changed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from varestorer.io.images import list_images, no_pil_limit

LIST_COLUMNS = ("package", "version", "licence", "path", "name", "sha256")
MANIFEST_COLUMNS = ("file", "package", "version", "licence", "width", "height", "sha256", "source_path")
FINGERPRINT_SIDE = 16
SAME_PICTURE_TOLERANCE = 0.01  # mean |difference| of [0, 1] RGB thumbnails: rescales of one photo measured <= 0.001
SAME_ASPECT_TOLERANCE = 0.02  # relative; another crop of one picture is a different training image


@dataclass(frozen=True)
class Candidate:
    """One image file: where it is and its upright size in pixels."""

    path: Path
    width: int
    height: int

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_upright(path: Path, draft: int | None = None) -> Image.Image:
    with no_pil_limit(), Image.open(path) as image:
        if draft:  # JPEG: decode at a reduced scale (1/2 to 1/8), much faster on big files
            image.draft("RGB", (draft, draft))
        image.load()
        return ImageOps.exif_transpose(image) or image


def candidate_of(path: Path) -> Candidate:
    """The file's upright size, read from the header (no full decode)."""
    with no_pil_limit(), Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that swap the axes
            width, height = height, width
    return Candidate(path, width, height)


def fingerprint(image: Image.Image, side: int = FINGERPRINT_SIDE) -> np.ndarray:
    """A ``(side, side, 3)`` float RGB thumbnail in [0, 1], the same for any resolution of the picture."""
    return np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BOX), dtype=np.float32) / 255.0


def same_picture(a: Candidate, print_a: np.ndarray, b: Candidate, print_b: np.ndarray) -> bool:
    """Whether two files hold one picture at two resolutions (same aspect, same small thumbnail)."""
    aspect_a, aspect_b = a.width / a.height, b.width / b.height
    if abs(aspect_a - aspect_b) > SAME_ASPECT_TOLERANCE * max(aspect_a, aspect_b):
        return False
    return float(np.abs(print_a - print_b).mean()) < SAME_PICTURE_TOLERANCE


def keep_largest(candidates: Sequence[Candidate]) -> tuple[list[Candidate], dict[Path, Path]]:
    """Fold copies of one picture (byte-identical or rescaled) into the largest; keep the input order.

    Returns:
        The kept candidates, and for each dropped file the kept file it duplicates.
    """
    by_size = sorted(candidates, key=lambda c: (-c.pixels, str(c.path)))
    kept: list[tuple[Candidate, np.ndarray]] = []
    dropped: dict[Path, Path] = {}
    for candidate in by_size:
        print_ = fingerprint(_open_upright(candidate.path, draft=FINGERPRINT_SIDE * 8))
        twin = next((k for k, k_print in kept if same_picture(k, k_print, candidate, print_)), None)
        if twin is None:
            kept.append((candidate, print_))
        else:
            dropped[candidate.path] = twin.path
    kept_paths = {k.path for k, _ in kept}
    return [c for c in candidates if c.path in kept_paths], dropped


def scan(folders: Sequence[Path], min_short_side: int) -> tuple[list[Candidate], dict[Path, Path]]:
    """Every image under ``folders`` with a short side of at least ``min_short_side``, de-duplicated."""
    found = []
    for path in list_images(folders, recursive=True):
        try:
            candidate = candidate_of(path.resolve())  # a package's size-named links name one real file
        except OSError:
            continue  # not an image after all (an icon cache, a broken file): never a candidate
        if candidate.short_side >= min_short_side:
            found.append(candidate)
    return keep_largest(found)


def contact_sheet(
    candidates: Sequence[Candidate],
    out: Path,
    *,
    thumb: int = 320,
    columns: int = 5,
    root: Path | None = None,
    first_index: int = 0,
) -> None:
    """A grid of thumbnails, each labelled with its index (from ``first_index``), size and path below ``root``."""
    label_height = 28
    rows = max(1, -(-len(candidates) // columns))
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, candidate in enumerate(candidates):
        image = _open_upright(candidate.path, draft=thumb * 2).convert("RGB")
        image.thumbnail((thumb, thumb))
        x, y = (index % columns) * thumb, (index // columns) * (thumb + label_height)
        sheet.paste(image, (x + (thumb - image.width) // 2, y))
        name = str(candidate.path.relative_to(root) if root else candidate.path)
        draw.text((x + 2, y + thumb), f"{first_index + index} {candidate.width}x{candidate.height}", fill="black")
        draw.text((x + 2, y + thumb + 13), name[-(thumb // 6) :], fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def read_list(path: Path) -> list[dict[str, str]]:
    """The kept-files list: tab-separated, one header line, ``#`` lines are comments."""
    with open(path, newline="") as file:
        lines = [line for line in file if line.strip() and not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    if not rows or tuple(rows[0].keys()) != LIST_COLUMNS:
        raise ValueError(f"{path}: expected the columns {'  '.join(LIST_COLUMNS)}")
    return rows


def build(
    rows: Sequence[dict[str, str]], unpacked: Path, dest: Path, min_short_side: int = 512
) -> list[dict[str, str | int]]:
    """Copy each listed file to ``dest/<package>/<name>`` and write ``dest/MANIFEST.tsv``.

    ``name`` is a column of the list: packages often name their files by size (``2560x1600.jpg``).

    Raises:
        ValueError: a listed file is missing, differs from its sha256, is too small, two list entries
            hold one picture, or two would land on one name; nothing is written then.
    """
    sources: list[Candidate] = []
    entries: list[dict[str, str | int]] = []
    targets: set[str] = set()
    for row in rows:
        source = unpacked / row["package"] / row["path"].lstrip("/")
        if not source.is_file():
            raise ValueError(f"{row['package']}: {row['path']} is not in the package")
        digest = sha256_of(source)
        if digest != row["sha256"]:
            raise ValueError(f"{row['package']}: {row['path']} changed (sha256 {digest}, listed {row['sha256']})")
        candidate = candidate_of(source)
        if candidate.short_side < min_short_side:
            raise ValueError(f"{source}: short side {candidate.short_side} px < {min_short_side}")
        target = f"{row['package']}/{row['name']}"
        if target in targets:
            raise ValueError(f"two listed files would both be {target}")
        targets.add(target)
        sources.append(candidate)
        entries.append(
            {
                "file": target,
                "package": row["package"],
                "version": row["version"],
                "licence": row["licence"],
                "width": candidate.width,
                "height": candidate.height,
                "sha256": digest,
                "source_path": row["path"],
            }
        )
    _, dropped = keep_largest(sources)
    if dropped:
        twins = ", ".join(f"{a} = {b}" for a, b in dropped.items())
        raise ValueError(f"the list holds one picture twice: {twins}")
    for candidate, entry in zip(sources, entries, strict=True):
        copy = dest / str(entry["file"])
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(candidate.path, copy)
    with open(dest / "MANIFEST.tsv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(entries)
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scan_parser = commands.add_parser("scan", help="list and de-duplicate candidates, draw a contact sheet")
    scan_parser.add_argument("folders", type=Path, nargs="+")
    scan_parser.add_argument("--min-short-side", type=int, default=512)
    scan_parser.add_argument("--sheet", type=Path, help="contact sheet PNG (split into pages of 40)")
    build_parser = commands.add_parser("build", help="copy the listed files and write MANIFEST.tsv")
    build_parser.add_argument("--list", type=Path, required=True, dest="list_path")
    build_parser.add_argument("--unpacked", type=Path, required=True)
    build_parser.add_argument("--dest", type=Path, required=True)
    build_parser.add_argument("--min-short-side", type=int, default=512)
    args = parser.parse_args(argv)

    if args.command == "scan":
        kept, dropped = scan(args.folders, args.min_short_side)
        root = args.folders[0].resolve() if len(args.folders) == 1 else None
        for index, candidate in enumerate(kept):
            print(f"{index}\t{candidate.width}x{candidate.height}\t{candidate.path}\t{sha256_of(candidate.path)}")
        for path, twin in dropped.items():
            print(f"# duplicate\t{path}\t= {twin}")
        if args.sheet:
            page = 40
            for start in range(0, len(kept), page):
                out = args.sheet.with_name(f"{args.sheet.stem}_{start // page}{args.sheet.suffix}")
                contact_sheet(kept[start : start + page], out, root=root, first_index=start)
        return 0

    try:
        entries = build(read_list(args.list_path), args.unpacked, args.dest, args.min_short_side)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    size = sum((args.dest / str(e["file"])).stat().st_size for e in entries)
    print(f"{len(entries)} photos, {size / 2**20:.1f} MiB in {args.dest} (MANIFEST.tsv beside them)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
