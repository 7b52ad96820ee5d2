from __future__ import annotations

import os

import numpy as np
from PIL import Image

from varestorer.io.images import list_images


def test_recursive_listing_follows_symlinked_folders_and_skips_hidden(tmp_path) -> None:
    real = tmp_path / "elsewhere" / "photos"
    real.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(real / "a.png")
    (real / "notes.txt").write_text("not an image")
    data = tmp_path / "data"
    (data / ".cache").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(data / ".cache" / "hidden.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(data / "b.jpg")
    os.symlink(real, data / "linked")
    assert list_images([data], recursive=True) == [data / "b.jpg", data / "linked" / "a.png"]
    assert list_images([data]) == [data / "b.jpg"]


def test_atomic_outputs_get_the_usual_permissions(tmp_path) -> None:
    from varestorer.io.atomic import atomic_directory, atomic_path

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "inner.txt").write_text("y")
    finally:
        os.umask(mask)
    assert oct((tmp_path / "f.txt").stat().st_mode & 0o777) == "0o644"
    assert oct((tmp_path / "d").stat().st_mode & 0o777) == "0o755"
    assert (tmp_path / "d" / "inner.txt").read_text() == "y"
