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
