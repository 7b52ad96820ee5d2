"""``varestorer reconstruct``: tokenizer round trips at the input's size and name, model resolution,
``--scales``, tiling, token statistics, bad files and existing outputs."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import varestorer.families as families
from varestorer.cli.main import main
from varestorer.inference.reconstruction import (
    MERGED_STUDENT_CAVEAT,
    RoundTrip,
    ScaleSpec,
    check_scales,
    default_tokenizer_source,
    find_tokenizer,
    parse_scales,
    schedule_for,
)
from varestorer.inference.restorer import Restorer
from varestorer.io.images import read_image
from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.models.teacher import Teacher
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.tokenizer.quantizer import BitwiseQuantizer
from varestorer.tokenizer.scales import schedule_for_grid
from varestorer.transformer.config import transformer_preset
from varestorer.transformer.model import NextScaleTransformer


class LocalTokenizer(nn.Module):
    """Convolutions only (no GroupNorm, whose statistics span a whole tile), stride 4, a receptive field
    of a few pixels, as TAEF2's: tiles that overlap enough see what the whole image sees."""

    stride = 4
    token_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 4, stride=4), nn.ReLU(), nn.Conv2d(16, 6, 1)
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=4), nn.Conv2d(16, 3, 3, padding=1)
        )
        self.quantizer = BitwiseQuantizer(6)
        with torch.no_grad():  # latent tokens of norm ~3 (several scales matter) and a decoder that shows them
            self.encoder[-1].weight.mul_(10)
            for layer in (self.decoder[0], self.decoder[3]):
                layer.weight.mul_(3)

    def default_schedule(self, height_px: int, width_px: int):
        return schedule_for_grid(height_px // 4, width_px // 4)

    def encode(self, x):
        return self.encoder(x)

    def tokenize(self, x, schedule=None):
        return self.quantizer.quantize(self.encode(x), schedule or self.default_schedule(*x.shape[-2:]))

    def decode(self, f):
        return self.decoder(f).clamp(-1, 1)


@pytest.fixture
def tokenizer_dir(tmp_path):
    return str(MultiScaleTokenizer(tokenizer_preset("tiny")).save_pretrained(tmp_path / "tok"))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_keeps_each_input_name_size_and_mode_and_evaluate_pairs_them(
    tmp_path, tiny_image, tokenizer_dir, capsys
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rgb = tiny_image(40, 24)  # not a multiple of the stride 16: padded and cropped back
    Image.fromarray(rgb).save(src / "rgb.png")
    Image.fromarray(rgb).save(src / "photo.jpg", quality=95)
    Image.fromarray(rgb).convert("L").save(src / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 24), 77, np.uint8)])).save(src / "rgba.png")
    cv2.imwrite(str(src / "deep.png"), (rgb.astype(np.uint16) * 257)[..., ::-1])
    code = main(["reconstruct", str(src), "-o", str(tmp_path / "out"), "--model", tokenizer_dir])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "reconstructed 5, skipped 0 (exist), failed 0" in captured.out
    expected = {
        "rgb.png": ((40, 24, 3), np.uint8),
        "photo.jpg": ((40, 24, 3), np.uint8),
        "gray.png": ((40, 24, 1), np.uint8),
        "rgba.png": ((40, 24, 4), np.uint8),
        "deep.png": ((40, 24, 3), np.uint16),
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(expected)
    for name, (shape, dtype) in expected.items():
        out = read_image(tmp_path / "out" / name)
        assert (out.shape, out.dtype) == (shape, dtype), name
    assert (read_image(tmp_path / "out" / "rgba.png")[..., 3] == 77).all()  # alpha passes through
    code = main(["evaluate", "--pred", str(tmp_path / "out"), "--gt", str(src), "--metrics", "psnr", "--scale", "0"])
    assert code == 0 and "5 image(s)" in capsys.readouterr().out


def test_output_is_decode_of_tokenize_of_the_input(tmp_path, tiny_image, tokenizer_dir) -> None:
    image = tiny_image(32, 48)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert main(["reconstruct", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", tokenizer_dir]) == 0
    tokenizer = MultiScaleTokenizer.from_pretrained(tokenizer_dir)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    with torch.no_grad():
        expected = (tokenizer.decode(tokenizer.tokenize(x).f_hat)[0].permute(1, 2, 0) + 1) / 2 * 255
    out = read_image(tmp_path / "out" / "a.png").astype(np.float32)
    assert np.abs(out - expected.numpy()).max() <= 1.0  # rounding to 8 bits only


def test_teacher_and_student_folders_give_the_teachers_tokenizer(tmp_path) -> None:
    tokenizer = MultiScaleTokenizer(tokenizer_preset("tiny")).eval()
    transformer = NextScaleTransformer(transformer_preset("tiny")).eval()
    Teacher(tokenizer, transformer).save_pretrained(tmp_path / "teacher")
    loaded, where, caveat = find_tokenizer(tmp_path / "teacher")
    assert _same(loaded, tokenizer) and "teacher" in where and caveat is None

    config = StudentConfig(
        tokenizer=tokenizer.config, transformer=transformer.config, image_size=64, scale=4, lora_rank=2
    )
    student = Student(config).eval()
    for part in ("encoder", "decoder", "quantizer"):
        getattr(student, part).load_state_dict(getattr(tokenizer, part).state_dict())
    with torch.no_grad():  # a distilled encoder differs from the teacher's
        for param in student.encoder.parameters():
            param.add_(1.0)
    student.config = replace(student.config, teacher="../teacher")
    student.save_pretrained(tmp_path / "student")
    loaded, where, caveat = find_tokenizer(tmp_path / "student")
    assert _same(loaded, tokenizer) and "teacher's tokenizer" in where and caveat is None

    student.merged().save_pretrained(tmp_path / "merged")
    loaded, _, caveat = find_tokenizer(tmp_path / "merged")
    assert caveat == MERGED_STUDENT_CAVEAT
    assert _same(loaded.encoder, student.encoder) and not _same(loaded.encoder, tokenizer.encoder)
    assert _same(loaded.decoder, tokenizer.decoder)  # not trained here: still the teacher's

    # Infinity's layout registers the quantizer twice (quantize.lfq.mask): the student's one fills both.
    infinity = replace(tokenizer_preset("tiny"), infinity_buffers=True)
    config = StudentConfig(tokenizer=infinity, transformer=transformer.config, image_size=64, lora_rank=2, merged=True)
    Student(config).save_pretrained(tmp_path / "infinity")
    loaded, _, _ = find_tokenizer(tmp_path / "infinity")
    assert "quantize.lfq.mask" in loaded.state_dict()


def test_embedded_tokenizer_is_the_default_when_shipped(tmp_path, monkeypatch) -> None:
    assert default_tokenizer_source() in ("default-tokenizer", "default")
    monkeypatch.setattr(families, "WEIGHTS_DIR", tmp_path / "weights")  # an install that ships no weights
    assert default_tokenizer_source() == "default"
    tokenizer = MultiScaleTokenizer(tokenizer_preset("tiny"))
    tokenizer.save_pretrained(tmp_path / "weights" / "default-tokenizer")
    assert default_tokenizer_source() == "default-tokenizer"
    loaded, where, _ = find_tokenizer("default-tokenizer")
    assert _same(loaded, tokenizer) and "MultiScaleTokenizer" in where
    with pytest.raises(FileNotFoundError, match="embedded names: default-tokenizer"):
        find_tokenizer("nope")


def test_folders_without_a_tokenizer_are_one_line_errors(tmp_path, tokenizer_dir, capsys) -> None:
    NextScaleTransformer(transformer_preset("tiny")).save_pretrained(tmp_path / "transformer")
    with pytest.raises(ValueError, match="holds a NextScaleTransformer"):
        find_tokenizer(tmp_path / "transformer")
    with pytest.raises(ValueError, match="is a file"):
        find_tokenizer(f"{tokenizer_dir}/model.safetensors")
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    code = main(["reconstruct", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "error: no tokenizer at" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        (None, ScaleSpec("full")),
        ("full", ScaleSpec("full")),
        ("4", ScaleSpec("count", count=4)),
        (" NONE ", ScaleSpec("none")),
        ("1,2,4", ScaleSpec("sides", sides=(1, 2, 4))),
        ("1, 2, 4,", ScaleSpec("sides", sides=(1, 2, 4))),
        ("32,", ScaleSpec("sides", sides=(32,))),
    ],
)
def test_scales_syntax(text, spec) -> None:
    assert parse_scales(text) == spec


@pytest.mark.parametrize("text", ["0", "-1", "a", "4,2", "1,1", "1,,2", ",", "1.5", "1;2"])
def test_bad_scales_are_refused(text) -> None:
    with pytest.raises(ValueError, match="--scales"):
        parse_scales(text)


def test_scales_fit_the_tile_and_scale_with_smaller_grids() -> None:
    tokenizer = MultiScaleTokenizer(tokenizer_preset("tiny"))  # stride 16
    check_scales(parse_scales("1,2,4"), tokenizer, 64)
    with pytest.raises(ValueError, match="larger than the tile's grid 4"):
        check_scales(parse_scales("1,2,8"), tokenizer, 64)
    with pytest.raises(ValueError, match="has 3 scales"):
        check_scales(parse_scales("9"), tokenizer, 64)
    with pytest.raises(ValueError, match="multiple of the tokenizer stride 16"):
        check_scales(parse_scales("full"), tokenizer, 60)
    sides = parse_scales("1,2,4")
    assert schedule_for(sides, tokenizer, 64, 64, 4) == ((1, 1), (2, 2), (4, 4))
    assert schedule_for(sides, tokenizer, 32, 64, 4) == ((1, 1), (1, 2), (2, 4))  # half as tall
    assert schedule_for(sides, tokenizer, 16, 16, 4) == ((1, 1),)  # repeats dropped
    assert schedule_for(parse_scales("2"), tokenizer, 64, 64, 4) == ((1, 1), (2, 2))
    assert schedule_for(parse_scales("none"), tokenizer, 64, 64, 4) is None


def test_scales_errors_stop_before_any_output(tmp_path, tokenizer_dir, capsys) -> None:
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    for extra in (
        ["--scales", "99"],
        ["--scales", "2,1"],
        ["--tile", "50"],
        ["--tile-overlap", "512"],
        ["--device", "nonsense"],
        ["--scales", "none", "--stats", "s.json"],
    ):
        code = main(
            ["reconstruct", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", tokenizer_dir, *extra]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "error:" in err, (extra, err)
    assert not (tmp_path / "out" / "a.png").exists()


def test_coarse_scales_reconstruct_worse_than_the_full_schedule(tmp_path, tiny_image, tokenizer_dir) -> None:
    torch.manual_seed(0)
    tokenizer = MultiScaleTokenizer(tokenizer_preset("tiny")).eval()
    image = torch.from_numpy(tiny_image(64, 64)).permute(2, 0, 1)[None].float() / 255
    errors = {}
    for text in ("1", "full", "none"):
        model = RoundTrip(tokenizer, parse_scales(text), 64)
        with torch.no_grad():
            errors[text] = float(
                (model(image) - (tokenizer.decode(tokenizer.encode(image * 2 - 1)) + 1) / 2).abs().mean()
            )
    assert errors["none"] < 1e-6  # "none" is the plain autoencoder
    assert errors["full"] < errors["1"]  # more scales: closer to the unquantised latent


def test_tiled_equals_untiled_where_every_scale_is_local(tiny_image) -> None:
    """Without coarse scales and global norms each token depends only on its neighbourhood: tiles agree
    with the whole image (a few bits flip where a tile border shifts a latent); coarse scales do not."""
    tokenizer = LocalTokenizer().eval()
    image = tiny_image(64, 64)
    calls = []

    def run(scales: str, tile: int) -> np.ndarray:
        model = RoundTrip(tokenizer, parse_scales(scales), tile, lambda *_: calls.append(tile))
        restorer = Restorer(model, device="cpu", tile=tile, tile_overlap=24, color_fix="none")
        return restorer(image).astype(np.float32)

    whole = {spec: run(spec, 64) for spec in ("none", "16,", "full")}
    tiled = {spec: run(spec, 32) for spec in ("none", "8,", "full")}
    assert calls.count(32) == 2 * 25 and calls.count(64) == 2  # 5 x 5 tiles per quantized run
    local = [np.abs(whole["none"] - tiled["none"]).mean(), np.abs(whole["16,"] - tiled["8,"]).mean()]
    assert max(local) < 3.0, local  # in 8-bit levels; the images span about +-70 around their mean
    assert np.abs(whole["full"] - tiled["full"]).mean() > 4 * max(local)


def test_stats_json_and_table(tmp_path, tiny_image, tokenizer_dir, capsys) -> None:
    Image.fromarray(tiny_image(64, 64)).save(tmp_path / "a.png")
    Image.fromarray(tiny_image(100, 40, seed=1)).save(tmp_path / "b.png")
    stats = tmp_path / "stats.json"
    args = ["reconstruct", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "out")]
    args += ["--model", tokenizer_dir, "--tile", "64", "--stats", str(stats)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "flip h" in out and "residual" in out
    report = json.loads(stats.read_text())
    assert report["images"] == 2 and report["tile"] == 64 and report["scales"] == "full"
    assert report["tile_schedule"] == [[1, 1], [2, 2], [4, 4]]  # the tiny tokenizer's stride is 16
    first = report["per_scale"][0]
    assert first["grid"] == [1, 1] and first["tokens"] == 1 + 2  # one tile for a, two (100 px tall) for b
    assert all(0 <= s["ones_fraction"] <= 1 for s in report["per_scale"])
    assert [s["index"] for s in report["per_scale"]] == list(range(len(report["per_scale"])))
    # An existing statistics file is kept unless --overwrite, before any work.
    code = main([*args, "-o", str(tmp_path / "out2")])
    assert code == 2 and "stats.json exists" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    assert main([*args, "--overwrite", "--quiet"]) == 0
    assert "flip h" not in capsys.readouterr().out


def test_bad_files_are_reported_and_existing_outputs_kept(tmp_path, tiny_image, tokenizer_dir, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(tiny_image(32, 32)).save(src / "good.png")
    Image.fromarray(tiny_image(32, 32, seed=2)).save(src / "kept.png")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.png").write_bytes(b"earlier result")
    stats = tmp_path / "s.json"
    args = ["reconstruct", str(src), "-o", str(tmp_path / "out"), "--model", tokenizer_dir, "--stats", str(stats)]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED" in captured.err and "broken.png" in captured.err.splitlines()[-1]
    assert "reconstructed 1, skipped 1 (exist), failed 1" in captured.out
    assert (tmp_path / "out" / "kept.png").read_bytes() == b"earlier result"
    assert read_image(tmp_path / "out" / "good.png").shape == (32, 32, 3)
    assert json.loads(stats.read_text())["images"] == 1  # only the image that went through
    assert main([*args, "--overwrite"]) == 1
    assert read_image(tmp_path / "out" / "kept.png").shape == (32, 32, 3)


def test_the_round_trip_is_a_library_call(tiny_image, tokenizer_dir) -> None:
    # What `reconstruct --model DIR --tile 64 --scales 2` does, from Python: any image kind in, the same out.
    from varestorer.inference.reconstruction import Reconstructor

    reconstructor = Reconstructor(tokenizer_dir, scales="2", tile=64, device="cpu")
    image = tiny_image(48, 40)
    out = reconstructor(image)
    assert out.shape == image.shape and out.dtype == image.dtype
    tensor = reconstructor(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    assert torch.allclose(tensor, torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255, atol=1 / 255 + 1e-6)
    report = reconstructor.report()
    assert report["images"] == 2 and report["scales"] == "2" and report["tile_schedule"] == [[1, 1], [2, 2]]
    assert [s.index for s in reconstructor.statistics()] == [0, 1] and "overlap 16" in reconstructor.describe()
    assert Reconstructor(tokenizer_dir, scales=parse_scales("1,2,"), tile=64).scales_text == "1,2"
    with pytest.raises(ValueError, match="--tile-overlap must be in"):
        Reconstructor(tokenizer_dir, tile=64, tile_overlap=64)
