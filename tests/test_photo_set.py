"""recipes/photo_set.py: de-duplication across resolutions, the size filter, and the manifest build."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_SPEC = importlib.util.spec_from_file_location(
    "photo_set", Path(__file__).resolve().parents[1] / "recipes" / "photo_set.py"
)
assert _SPEC and _SPEC.loader
photo_set = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("photo_set", photo_set)  # dataclasses look their module up there
_SPEC.loader.exec_module(photo_set)


def _save(array: np.ndarray, path: Path, size: tuple[int, int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    image.save(path)
    return path


def _list_line(package: str, path: str, name: str, file: Path, licence: str = "CC0-1.0") -> str:
    return f"{package}\t1.0-1\t{licence}\t{path}\t{name}\t{hashlib.sha256(file.read_bytes()).hexdigest()}"


@pytest.fixture
def pictures(tiny_image, tmp_path):
    """One picture at 96x64 and 48x32, a byte copy, a crop of it, another picture, and a 40x24 one."""
    picture, other = tiny_image(64, 96, seed=0), tiny_image(64, 96, seed=1)
    root = tmp_path / "unpacked" / "pkg" / "img"
    files = {
        "large": _save(picture, root / "large.png"),
        "small": _save(picture, root / "small.png", size=(48, 32)),
        "crop": _save(picture[:, :64], root / "crop.png"),
        "other": _save(other, root / "other.png"),
        "tiny": _save(other, root / "tiny.png", size=(40, 24)),
    }
    files["copy"] = root / "large_copy.png"  # of two equal sizes the first path in name order is kept
    files["copy"].write_bytes(files["large"].read_bytes())
    return files


def test_scan_keeps_the_largest_copy_of_each_picture_and_drops_small_files(pictures):
    kept, dropped = photo_set.scan([pictures["large"].parent], min_short_side=32)
    names = sorted(c.path.name for c in kept)
    # The 48x32 rescale and the byte copy fold into the 96x64 original; a crop (another aspect) is
    # another training image; the 40x24 file is below the size floor.
    assert names == ["crop.png", "large.png", "other.png"]
    assert {p.name: q.name for p, q in dropped.items()} == {"small.png": "large.png", "large_copy.png": "large.png"}


def test_same_picture_tells_a_rescale_from_a_different_photo(pictures):
    def load(key):
        path = pictures[key]
        return photo_set.candidate_of(path), photo_set.fingerprint(Image.open(path))

    assert photo_set.same_picture(*load("large"), *load("small"))
    assert not photo_set.same_picture(*load("large"), *load("other"))


def test_build_copies_the_list_and_writes_the_manifest(pictures, tmp_path):
    unpacked, dest = tmp_path / "unpacked", tmp_path / "photos"
    lines = [
        "# a comment",
        "\t".join(photo_set.LIST_COLUMNS),
        _list_line("pkg", "img/large.png", "a.png", pictures["large"], licence="CC-BY-4.0"),
        _list_line("pkg", "/img/other.png", "b.png", pictures["other"]),
    ]
    (tmp_path / "photos.tsv").write_text("\n".join(lines) + "\n")
    entries = photo_set.build(photo_set.read_list(tmp_path / "photos.tsv"), unpacked, dest, min_short_side=32)

    assert [e["file"] for e in entries] == ["pkg/a.png", "pkg/b.png"]
    assert (dest / "pkg" / "a.png").read_bytes() == pictures["large"].read_bytes()
    with open(dest / "MANIFEST.tsv", newline="") as file:
        manifest = list(csv.DictReader(file, delimiter="\t"))
    assert tuple(manifest[0].keys()) == photo_set.MANIFEST_COLUMNS
    assert manifest[0]["licence"] == "CC-BY-4.0" and manifest[0]["version"] == "1.0-1"
    assert (manifest[0]["width"], manifest[0]["height"]) == ("96", "64")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("img/large.png", "a.png", "large"), ("img/small.png", "b.png", "small")], "one picture twice"),
        ([("img/tiny.png", "a.png", "tiny")], "short side 24 px"),
        ([("img/large.png", "a.png", "other")], "changed"),  # the listed sha256 is another file's
        ([("img/large.png", "a.png", "large"), ("img/other.png", "a.png", "other")], "would both be"),
        ([("img/gone.png", "a.png", "large")], "not in the package"),
    ],
)
def test_build_refuses_a_bad_list_and_writes_nothing(pictures, tmp_path, entries, message):
    rows = [
        dict(zip(photo_set.LIST_COLUMNS, _list_line("pkg", path, name, pictures[key]).split("\t"), strict=True))
        for path, name, key in entries
    ]
    with pytest.raises(ValueError, match=message):
        photo_set.build(rows, tmp_path / "unpacked", tmp_path / "photos", min_short_side=32)
    assert not (tmp_path / "photos").exists()


def test_read_list_names_the_expected_columns(tmp_path):
    (tmp_path / "bad.tsv").write_text("package\tpath\nx\ty\n")
    with pytest.raises(ValueError, match="expected the columns"):
        photo_set.read_list(tmp_path / "bad.tsv")


def test_the_shipped_list_is_well_formed():
    rows = photo_set.read_list(Path(__file__).resolve().parents[1] / "recipes" / "photos.tsv")
    assert len(rows) >= 40
    assert all(len(r["sha256"]) == 64 and r["licence"] and r["version"] for r in rows)
    targets = [f"{r['package']}/{r['name']}" for r in rows]
    assert len(set(targets)) == len(targets)


def test_contact_sheet_lays_out_a_labelled_grid(pictures, tmp_path):
    kept, _ = photo_set.scan([pictures["large"].parent], min_short_side=32)
    out = tmp_path / "sheet.png"
    photo_set.contact_sheet(kept, out, thumb=48, columns=2, root=pictures["large"].parent, first_index=40)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert sheet.shape == (2 * (48 + 28), 2 * 48, 3)  # 3 candidates in 2 columns: 2 rows of thumb + label
    assert (sheet[:32, :48] != 255).any() and (sheet[48 + 28 :, 48:] == 255).all()  # last cell empty


def test_main_build_reports_a_changed_file_and_exits_1(pictures, tmp_path, capsys):
    line = _list_line("pkg", "img/large.png", "a.png", pictures["other"])
    (tmp_path / "photos.tsv").write_text("\t".join(photo_set.LIST_COLUMNS) + "\n" + line + "\n")
    argv = ["build", "--list", str(tmp_path / "photos.tsv"), "--unpacked", str(tmp_path / "unpacked")]
    assert photo_set.main([*argv, "--dest", str(tmp_path / "photos"), "--min-short-side", "32"]) == 1
    assert "changed" in capsys.readouterr().err
