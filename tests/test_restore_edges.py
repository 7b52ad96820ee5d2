"""The rough edges of ``varestorer restore`` (issue 20): progress, and every bad case one clear line."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.cli._progress import Progress, format_seconds
from varestorer.cli.main import main
from varestorer.inference.restorer import Restorer
from varestorer.inference.tiling import tiled_apply


@pytest.fixture
def checkpoint(tmp_path):
    model = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2))
    return str(model.save_pretrained(tmp_path / "ckpt"))


def _nearest_x2(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, -2).repeat_interleave(2, -1)


# 1. progress ----------------------------------------------------------------------------------------


def test_tiled_apply_reports_zero_first_then_every_batch() -> None:
    calls: list[tuple[int, int]] = []
    x = torch.rand(2, 3, 20, 20)
    tiled_apply(_nearest_x2, x, scale=2, tile=12, overlap=4, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 8), (3, 8), (6, 8), (8, 8)]  # 2 images x 2x2 tiles, batches of 3


def test_restorer_forwards_progress_for_every_input_kind(checkpoint) -> None:
    restorer = Restorer.from_pretrained(checkpoint, device="cpu", tile=8, tile_overlap=2, edge_context=0)
    calls: list[tuple[int, int]] = []
    for image in (np.zeros((12, 12, 3), np.uint8), Image.new("RGB", (12, 12)), torch.zeros(1, 3, 12, 12)):
        calls.clear()
        restorer(image, progress=lambda d, t: calls.append((d, t)))
        assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


class _FakeClock:
    def __init__(self, monkeypatch) -> None:
        self.now = 0.0
        monkeypatch.setattr("varestorer.cli._progress.time.perf_counter", lambda: self.now)


def test_progress_prints_periodic_tile_lines_with_eta_in_logs(monkeypatch) -> None:
    clock, stream = _FakeClock(monkeypatch), io.StringIO()
    progress = Progress(2, desc="restored", stream=stream, interval=10)
    progress.start("a.png")
    progress.tiles(0, 4)
    for done in (1, 2, 3, 4):
        clock.now += 6
        progress.tiles(done, 4)
    progress.finish("restored")
    progress.start("b.png")
    progress.tiles(0, 1)
    progress.tiles(1, 1)
    progress.finish("failed")
    lines = stream.getvalue().splitlines()
    assert lines == [
        "restored [1/2] a.png: 4 tiles",
        "restored [1/2] a.png: tile 2/4 (50%), 12.0s elapsed, ETA 12.0s",
        "restored [1/2] restored a.png (24.0s)",
        "restored [2/2] failed b.png (0.0s)",
    ]
    assert format_seconds(75) == "1m15s" and format_seconds(4000) == "1h06m"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_draws_an_image_bar_and_a_tile_bar() -> None:
    stream = _Terminal()
    with Progress(2, desc="restored", stream=stream) as progress:
        progress.start("a.png")
        for done in range(5):
            progress.tiles(done, 4)
        progress.write("skipped b.png: exists")
        progress.finish("restored")
    text = stream.getvalue()
    assert "\r" in text and "tile" in text and "2/2" not in text and "1/2" in text  # bars, not lines
    assert "skipped b.png: exists\n" in text and "restored [1/2]" not in text


def test_quiet_progress_prints_only_messages() -> None:
    stream = io.StringIO()
    with Progress(1, desc="restored", stream=stream, quiet=True) as progress:
        progress.start("a.png")
        progress.tiles(0, 4)
        progress.tiles(4, 4)
        progress.write("FAILED a.png: boom")
        progress.finish("failed")
    assert stream.getvalue() == "FAILED a.png: boom\n"


def test_restore_prints_a_line_per_file_when_not_a_terminal(tmp_path, tiny_image, checkpoint, capsys) -> None:
    for name in ("a", "b"):
        Image.fromarray(tiny_image(8, 8)).save(tmp_path / f"{name}.png")
    args = ["restore", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", checkpoint, "--tile", "4"]
    assert main([*args, "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "[1/2] " in err and "a.png: 25 tiles" in err and "[2/2] restored " in err
    assert main([*args, "-o", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert "tiles" not in capsys.readouterr().err


def test_evaluate_and_degrade_print_progress_lines_unless_quiet(tmp_path, tiny_image, capsys) -> None:
    (tmp_path / "src").mkdir()
    for name in ("a", "b"):
        Image.fromarray(tiny_image(16, 16)).save(tmp_path / "src" / f"{name}.png")
    assert (
        main(["degrade", str(tmp_path / "src"), "-o", str(tmp_path / "set"), "--crop", "16", "--preset", "bicubic"])
        == 0
    )
    err = capsys.readouterr().err
    assert "degrade [1/2] wrote a" in err and "degrade [2/2] wrote b" in err
    pred = str(tmp_path / "set" / "gt")
    assert main(["evaluate", "--pred", pred, "--gt", pred, "--metrics", "psnr"]) == 0
    assert "evaluate [2/2] scored b" in capsys.readouterr().err
    assert main(["evaluate", "--pred", pred, "--gt", pred, "--metrics", "psnr", "--quiet"]) == 0
    assert "scored" not in capsys.readouterr().err


# 2. devices -----------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["restore", "baseline", "evaluate"])
def test_cuda_on_a_cpu_build_is_one_line(tmp_path, tiny_image, checkpoint, capsys, command) -> None:
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "a.png")
    argv = {
        "restore": ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", checkpoint],
        "baseline": ["baseline", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--method", "realesr-general-x4v3"]
        + ["--weights", checkpoint],
        "evaluate": ["evaluate", "--pred", str(tmp_path), "--metrics", "psnr", "--gt", str(tmp_path)],
    }[command]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0] and "--device cpu" in err[0]
    assert main([*argv, "--device", "gpu"]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err


# 3. symlink loops -----------------------------------------------------------------------------------


def test_recursive_listing_survives_a_symlink_loop(tmp_path, tiny_image, checkpoint, capsys) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "in" / "a.png")
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "in" / "sub" / "b.png")
    (tmp_path / "in" / "sub" / "up").symlink_to("..")  # a loop
    (tmp_path / "in" / "again.png").symlink_to("a.png")  # the same real file twice
    assert (
        main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--recursive", "--model", checkpoint]) == 0
    )
    outputs = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert outputs == ["a.png", "sub/b.png"]
    assert "restored 2, skipped 0 (exist), failed 0" in capsys.readouterr().out


# 6. earlier outputs in the input folder ---------------------------------------------------------------


def test_suffix_into_the_input_folder_skips_earlier_outputs(tmp_path, tiny_image, checkpoint, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(tiny_image(8, 8)).save(folder / "a.png")
    args = ["restore", str(folder), "-o", str(folder), "--suffix", "_x2", "--model", checkpoint]
    assert main(args) == 0
    assert main(args) == 0  # the second run sees a_x2.png as an input too
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_x2.png"]
    captured = capsys.readouterr()
    assert "a_x2.png: an output of a.png" in captured.err
    assert "restored 0, skipped 1 (exist), 1 earlier output(s) not taken as inputs, failed 0" in captured.out


# 7. unwritable output -------------------------------------------------------------------------------


def test_unwritable_output_is_refused_before_the_model_loads(tmp_path, tiny_image, capsys) -> None:
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("not a folder")
    # --model names nothing: the output check must fail first (before any loading or computing)
    argv = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "file" / "out"), "--model", "missing"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"varestorer restore: error: cannot write to {tmp_path / 'file' / 'out'}: Not a directory"]


# 10. empty folder, orphan temporaries ----------------------------------------------------------------


def test_an_empty_folder_says_so_and_fails(tmp_path, checkpoint, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["restore", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--model", checkpoint]) == 1
    assert "no images in this folder" in capsys.readouterr().err


def test_orphan_temporaries_of_a_killed_run_are_removed(tmp_path, tiny_image, checkpoint) -> None:
    import subprocess
    import sys

    from varestorer.io.atomic import remove_orphans

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    orphan = out / f".a.png.{pid}-abcdefgh.tmp.png"
    orphan.write_bytes(b"partial")
    other = out / f".b.png.{pid}-abcdefgh.tmp.png"  # another target's orphan: swept from the folder
    other.write_bytes(b"partial")
    live = out / f".c.png.{__import__('os').getpid()}-abcdefgh.tmp.png"  # a live writer's: kept
    live.write_bytes(b"in progress")
    user = out / ".notes.abcdefgh.tmp"  # not ours (no PID): kept
    user.write_text("mine")
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "a.png")
    assert main(["restore", str(tmp_path / "a.png"), "-o", str(out), "--model", checkpoint]) == 0
    assert not orphan.exists() and not other.exists() and live.exists() and user.exists()
    assert remove_orphans(out) == []


# 4. frames and pages --------------------------------------------------------------------------------


def _frames(path) -> list[np.ndarray]:
    from PIL import ImageSequence

    with Image.open(path) as image:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]


def test_every_frame_and_page_is_restored_and_written_back(tmp_path, tiny_image, checkpoint, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    frames = [Image.fromarray(tiny_image(8, 8, seed=k)) for k in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=[50, 100, 150], loop=0)
    frames[0].save(folder / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "anim.png", save_all=True, append_images=frames[1:], duration=80, loop=2)
    assert main(["restore", str(folder), "-o", str(tmp_path / "out"), "--model", checkpoint]) == 0
    captured = capsys.readouterr()
    assert "restored 3, skipped 0 (exist), failed 0" in captured.out
    assert "restored 3 frames of" in captured.err
    for name in ("anim.gif", "pages.tif", "anim.png"):
        out = _frames(tmp_path / "out" / name)
        assert len(out) == 3 and all(frame.shape == (16, 16, 3) for frame in out), name
        assert not np.array_equal(out[0], out[1])  # each frame restored on its own
    with Image.open(tmp_path / "out" / "anim.gif") as gif:
        assert gif.info["loop"] == 0 and gif.info["duration"] == 50
        gif.seek(2)
        assert gif.info["duration"] == 150
    with Image.open(tmp_path / "out" / "anim.png") as apng:
        assert apng.info["loop"] == 2 and apng.info["duration"] == 80
    # a single-image format cannot hold them: refused, counted, nothing written
    assert (
        main(["restore", str(folder / "anim.gif"), "-o", str(tmp_path / "jpg"), "--model", checkpoint, "--ext", "jpg"])
        == 1
    )
    captured = capsys.readouterr()
    assert "3 frames do not fit in a .jpg file" in captured.err and "failed 1" in captured.out
    assert not (tmp_path / "jpg" / "anim.jpg").exists()


# 8. ICC profile and EXIF -----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tif"])
def test_icc_profile_and_exif_are_carried_with_orientation_reset(tmp_path, tiny_image, checkpoint, ext) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated on display
    exif[0x010F] = "TestCam"
    Image.fromarray(tiny_image(6, 8)).save(tmp_path / "a.jpg", icc_profile=icc, exif=exif, quality=95)
    argv = ["restore", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out"), "--model", checkpoint, "--ext", ext]
    assert main(argv) == 0
    with Image.open(tmp_path / "out" / f"a.{ext}") as out:
        assert out.size == (12, 16)  # upright (8x6 rotated), x2
        assert out.info.get("icc_profile") == icc
        assert out.getexif().get(0x010F) == "TestCam" and out.getexif().get(0x0112) == 1


@pytest.mark.parametrize("ext", ["tif", "png"])
def test_a_tiffs_photo_tags_are_carried_but_not_its_layout(tmp_path, tiny_image, ext) -> None:
    from varestorer.io.image_file import read_image_file, write_image_file

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated on display
    exif[0x010F], exif[0x0110] = "TestCam", "Model 7"
    exif.get_ifd(0x8769)[0x829A] = (1, 250)  # ExposureTime, in the EXIF sub-directory
    Image.fromarray(tiny_image(6, 8)).save(tmp_path / "a.tif", exif=exif.tobytes())  # among the TIFF's own tags
    source = read_image_file(tmp_path / "a.tif")
    grown = np.repeat(np.repeat(source.frames[0], 2, axis=0), 2, axis=1)
    write_image_file(tmp_path / f"out.{ext}", [grown], source)
    with Image.open(tmp_path / f"out.{ext}") as out:
        tags = out.getexif()
        assert out.size == (12, 16) and np.array_equal(np.asarray(out.convert("RGB")), grown)
        assert (tags.get(0x010F), tags.get(0x0110), tags.get(0x0112)) == ("TestCam", "Model 7", 1)
        assert tags.get_ifd(0x8769).get(0x829A) == (1, 250)


def test_icc_profile_survives_16_bit_png(tmp_path) -> None:
    from varestorer.io.images import write_image

    deep = (np.arange(4 * 4 * 3, dtype=np.uint16).reshape(4, 4, 3) * 1000).astype(np.uint16)
    write_image(tmp_path / "deep.png", deep, icc_profile=b"fake profile bytes", exif=Image.Exif().tobytes())
    with Image.open(tmp_path / "deep.png") as image:
        assert image.info.get("icc_profile") == b"fake profile bytes"
    import cv2

    assert np.array_equal(cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED)[..., ::-1], deep)


# 10. --max-pixels above Pillow's limit ----------------------------------------------------------------


def test_max_pixels_above_pillows_own_limit_takes_effect(tmp_path, monkeypatch) -> None:
    from varestorer.io.images import ImageReadError, read_image

    Image.new("RGB", (30, 20)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # stands in for Pillow's 89.5 MP
    assert read_image(tmp_path / "big.png", max_pixels=600).shape == (20, 30, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored
    with pytest.raises(ImageReadError, match="exceeds the 599-pixel limit"):
        read_image(tmp_path / "big.png", max_pixels=599)


# 9. no dark frame -----------------------------------------------------------------------------------


class ZeroPaddedBlurX2(torch.nn.Module):
    """A 5x5 box blur with zero padding, then nearest x2: like any conv net, it darkens its border."""

    scale, input_size, size_multiple = 2, None, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)
        return _nearest_x2(blurred)


def test_image_border_is_not_darkened_by_the_models_zero_padding() -> None:
    ramp = torch.linspace(0.3, 0.7, 24)
    gradient = torch.stack([ramp[None, :].expand(24, 24), ramp[:, None].expand(24, 24), torch.full((24, 24), 0.5)])[
        None
    ]
    reference = torch.nn.functional.interpolate(gradient, scale_factor=2, mode="bicubic", align_corners=False)

    def border_and_interior(edge_context: int | None) -> tuple[float, float]:
        kwargs = {} if edge_context is None else {"edge_context": edge_context}
        out = Restorer(ZeroPaddedBlurX2(), device="cpu", tile=16, tile_overlap=4, **kwargs)(gradient)
        error = (out - reference) * 255
        frame = torch.cat([error[..., :3, :].flatten(), error[..., -3:, :].flatten(), error[..., :, :3].flatten()])
        return float(frame.mean()), float(error[..., 8:-8, 8:-8].abs().mean())

    dark, inside = border_and_interior(0)
    assert dark < -20 and inside < 2  # the effect exists without context: a dark frame
    frame, inside = border_and_interior(None)  # the default mirrors 4 px around the image
    assert abs(frame) < 2 and inside < 2


# 5. wrong tensor shapes, inspect names ----------------------------------------------------------------


def _mis_shaped(tmp_path, checkpoint):
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    config["config"]["num_feat"] = 8  # the weights hold 4 features
    (bad / "config.json").write_text(json.dumps(config))
    return bad


def test_wrong_tensor_shapes_are_one_line_on_restore_and_a_warning_on_inspect(
    tmp_path, tiny_image, checkpoint, capsys
) -> None:
    bad = _mis_shaped(tmp_path, checkpoint)
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "a.png")
    assert main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match SRVGGNetCompact" in err[0] and "wrong shape" in err[0]
    assert main(["inspect", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "body.0.weight  (4, 3, 3, 3)" in captured.out  # still lists what is there
    assert "warning:" in captured.err and "wrong shape" in captured.err and "restore would refuse" in captured.err
    assert main(["inspect", checkpoint]) == 0 and "warning" not in capsys.readouterr().err


def test_torch_size_mismatch_of_any_model_family_is_one_line(tmp_path, monkeypatch) -> None:
    from varestorer.archs.srvgg import SRVGGNetCompact as Model

    def refuse(cls, path, **options):
        raise RuntimeError("Error(s) in loading state_dict for X:\n\tsize mismatch for a.weight: copying a param...")

    model = Model(SRVGGConfig(num_feat=4, num_conv=1, upscale=2)).save_pretrained(tmp_path / "m")
    monkeypatch.setattr(Model, "from_pretrained", classmethod(refuse))
    with pytest.raises(ValueError, match=r"1 tensor\(s\) of the wrong shape, e.g. a.weight"):
        Restorer.from_pretrained(model)


def test_inspect_takes_the_embedded_model_name(capsys) -> None:
    assert main(["inspect", "default", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Student: ") and "parameters" in out


# 10. NIQE/BRISQUE without scipy -------------------------------------------------------------------------


def test_niqe_and_brisque_need_no_scipy(monkeypatch) -> None:
    import importlib
    import math
    import sys

    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy now fails, as on a bare install
    monkeypatch.setitem(sys.modules, "scipy.special", None)
    from varestorer.metrics import brisque, niqe

    for module in (niqe, brisque):
        importlib.reload(module)
    assert np.allclose(niqe.gamma_function(np.array([0.5, 1.0, 4.5])), [math.sqrt(math.pi), 1.0, math.gamma(4.5)])
    brisque._grid.cache_clear()
    features = brisque.brisque_features(np.random.default_rng(0).random((48, 48)))
    assert features.shape == (36,) and np.isfinite(features).all()


# 10. the refused pickle ---------------------------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo PWNED",))


def test_refused_pickle_message_does_not_advise_turning_safety_off(tmp_path, tiny_image, capsys) -> None:
    torch.save({"w": _Evil()}, tmp_path / "evil.pth")
    Image.fromarray(tiny_image(8, 8)).save(tmp_path / "a.png")
    argv = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "evil.pth")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "PWNED" not in captured.out
    line = captured.err.strip()
    assert "refused" in line and "could run code" in line and "system" in line
    assert "weights_only" not in line and "False" not in line


# 10. a corrupt latest training checkpoint ----------------------------------------------------------------


def _run_to(config) -> None:
    from torch.utils.data import TensorDataset

    from varestorer.training.trainer import Trainer, seed_everything

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def forward(self, batch, step: int):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y), {}

    seed_everything(0)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(config, Linear(), resume=True)
    for batch in trainer.batches(trainer.make_loader(TensorDataset(x, x.sum(1, keepdim=True)))):
        loss, logs = trainer.model(batch, trainer.step)
        trainer.backward_step(loss, logs)
    trainer.close()
    return trainer


def test_resume_falls_back_past_a_corrupt_latest_checkpoint(tmp_path, caplog) -> None:
    import dataclasses

    from varestorer.training.config import TrainConfig

    config = TrainConfig(
        output_dir=str(tmp_path / "run"), max_steps=8, batch_size=4, ckpt_every=4, tensorboard=False, progress=False
    )
    config = dataclasses.replace(config, device="cpu")
    _run_to(config)
    root = tmp_path / "run" / "checkpoints"
    state = root / "step_00000008" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # a crash on a bad disk
    with caplog.at_level("WARNING"):
        resumed = _run_to(dataclasses.replace(config, max_steps=9))
    assert resumed.step == 9  # went on from step 4, not from scratch and not stopped
    assert "resuming from step_00000004: step_00000008 is unreadable" in caplog.text
    for folder in root.glob("step_*"):
        (folder / "state.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="no older checkpoint .* is readable either"):
        _run_to(dataclasses.replace(config, max_steps=10))


# 10. bench peak memory on a CPU ------------------------------------------------------------------------


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="RSS from /proc (Linux)")
def test_cpu_peak_memory_counts_memory_freed_by_earlier_runs(monkeypatch) -> None:
    from varestorer.benchmark import timing

    def work() -> None:
        chunks = [torch.ones(2**14) for _ in range(640)]  # 640 x 64 KB: heap, not mmap, allocations
        assert sum(float(c[0]) for c in chunks) == 640

    work()  # earlier runs: glibc raises its mmap threshold, then keeps the freed heap resident
    work()
    with timing.PeakMemory(torch.device("cpu")) as peak:
        work()
    assert peak.mb > 30, peak.kind  # 40 MB live; without releasing the free heap first: 0 MB
    assert "free heap released first" in peak.kind


def test_a_refused_training_state_names_what_was_blocked_without_the_unsafe_advice(tmp_path) -> None:
    import os
    import pickle

    from varestorer.training.checkpoints import STATE_NAME, load_checkpoint

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    folder = tmp_path / "step_00000002"
    folder.mkdir()
    (folder / STATE_NAME).write_bytes(pickle.dumps(Payload(), protocol=4))
    with pytest.raises(ValueError) as refused:
        load_checkpoint(folder)
    message = str(refused.value)
    assert "could run code" in message
    assert "weights_only" not in message and "\n" not in message
