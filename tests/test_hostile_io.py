"""Files and disks that do not cooperate (issue 31): pixels outside what is read, EXIF too long for JPEG,
a full disk under restore outputs and training checkpoints, two restores into one folder."""

from __future__ import annotations

import errno
import shutil

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.cli.main import main
from varestorer.io.images import read_image
from varestorer.training import checkpoints


@pytest.fixture
def model(tmp_path) -> str:
    return str(SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2)).save_pretrained(tmp_path / "model"))


def _restore(*args: str) -> int:
    return main(["restore", *args])


def test_float_and_32_bit_tiffs_beyond_their_range_are_refused_not_clipped(tmp_path, model, capsys) -> None:
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "float255.tif", (rng.random((6, 7)) * 255).astype(np.float32))
    tifffile.imwrite(tmp_path / "int32.tif", (rng.random((6, 7)) * 300_000).astype(np.int32))
    tifffile.imwrite(tmp_path / "float01.tif", rng.random((6, 7)).astype(np.float32))
    tifffile.imwrite(tmp_path / "int16.tif", (rng.random((6, 7)) * 60_000).astype(np.int32))
    with pytest.raises(
        ValueError, match=r"32-bit float pixels from 0(\.\d+)? to 25\d\.\d+; .* refused rather than clipped"
    ):
        read_image(tmp_path / "float255.tif")
    with pytest.raises(ValueError, match=r"32-bit integer pixels from \d+ to 2\d{5} do not fit in 16 bits"):
        read_image(tmp_path / "int32.tif")
    assert read_image(tmp_path / "float01.tif").dtype == np.uint8  # 0..1 floats are read as before
    assert read_image(tmp_path / "int16.tif").max() == tifffile.imread(tmp_path / "int16.tif").max()
    assert (
        _restore(
            str(tmp_path / "float255.tif"), str(tmp_path / "int32.tif"), "-o", str(tmp_path / "o"), "--model", model
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("refused rather than clipped") == 2 and not (tmp_path / "o").exists()


def test_a_photo_whose_exif_is_too_long_for_jpeg_is_written_without_it(tmp_path, tiny_image, model, capsys) -> None:
    exif = Image.Exif()
    exif[0x010E] = "x" * 200_000  # ImageDescription: a 200 KB EXIF block (JPEG holds at most 64 KB)
    exif[0x0110] = "Camera"
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "photo.png", exif=exif.tobytes())
    assert _restore(str(tmp_path / "photo.png"), "-o", str(tmp_path / "o"), "--model", model, "--ext", "jpg") == 0
    out = tmp_path / "o" / "photo.jpg"
    assert read_image(out).shape == (16, 16, 3)
    err = capsys.readouterr().err
    assert f"warning {out}: EXIF of " in err and "does not fit in JPEG (at most 65,533); written without it" in err
    with Image.open(out) as image:
        assert "exif" not in image.info


def test_a_full_disk_under_restore_outputs_is_one_line_and_exit_2(tmp_path, tiny_image, model, monkeypatch, capsys):
    for name in ("a", "b", "c"):
        Image.fromarray(tiny_image(8, 8)).save(tmp_path / f"{name}.png")
    real_save = Image.Image.save
    written: list[str] = []

    def save(self, fp, *args, **kwargs):
        if written:  # the first file fits, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(str(fp))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    paths = [str(tmp_path / f"{n}.png") for n in ("a", "b", "c")]
    assert _restore(*paths, "-o", str(tmp_path / "o"), "--model", model) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"varestorer restore: error: no space left on the disk of {tmp_path / 'o'} (mounted at")
    assert "b.png (1 of 3 written)" in err[-1] and "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png"]  # no temporaries left


def test_a_full_disk_while_a_checkpoint_is_written_keeps_the_previous_one(tmp_path, monkeypatch) -> None:
    root = tmp_path / "checkpoints"
    tensors = {"trainable": {"w": torch.ones(3)}}
    checkpoints.save_checkpoint(root, 1, tensors, {"step": 1})

    def full(*args, **kwargs):  # what torch.save's zip writer raises on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(checkpoints.torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(
        ValueError,
        match=r"no space left on the disk of .*checkpoints .* while writing checkpoint "
        r"step_00000002; step_00000001 is intact; free some space, then run again with --resume$",
    ):
        checkpoints.save_checkpoint(root, 2, tensors, {"step": 2})
    assert checkpoints.find_latest(root) == root / "step_00000001"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000001"]


def test_two_restores_into_one_folder_skip_what_the_other_wrote(tmp_path, tiny_image, model, monkeypatch, capsys):
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "a.png")
    from varestorer.inference.restorer import Restorer

    real_call = Restorer.__call__

    def other_run_finishes_first(self, *args, **kwargs):  # the other restore writes a.png while this one works
        out = real_call(self, *args, **kwargs)
        (tmp_path / "o").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "o" / "a.png")
        return out

    monkeypatch.setattr(Restorer, "__call__", other_run_finishes_first)
    assert _restore(str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", model) == 0
    captured = capsys.readouterr()
    assert "written meanwhile by another run" in captured.err + captured.out and "FAILED" not in captured.err
    assert read_image(tmp_path / "o" / "a.png").max() == 0  # the other run's file is kept
