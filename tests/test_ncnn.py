"""ncnn reader and conversion: synthetic .param/.bin files written here, then compared with torch."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from torch import nn

from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.foreign.ncnn import TAG_FP16, ncnn_to_state_dict, parse_param, read_ncnn
from varestorer.foreign.peers import load_peer


def _tagged(values: np.ndarray, storage: str) -> bytes:
    flat = values.astype(np.float32).ravel()
    if storage == "fp16":
        data = struct.pack("<I", TAG_FP16) + flat.astype("<f2").tobytes()
        return data + b"\0" * ((-len(data)) % 4)
    if storage == "fp32":
        return struct.pack("<I", 0) + flat.astype("<f4").tobytes()
    # "table": 256 fp32 levels + uint8 indices (ncnn's quantised storage)
    table = np.linspace(flat.min(), flat.max(), 256).astype("<f4")
    indices = np.abs(flat[:, None] - table[None]).argmin(1).astype(np.uint8)
    data = struct.pack("<I", 0x12345678) + table.tobytes() + indices.tobytes()
    return data + b"\0" * ((-len(data)) % 4)


def write_srvgg_ncnn(model: SRVGGNetCompact, stem, storages=("fp16",)) -> tuple:
    """Write ``model`` the way the ncnn converter lays out realesr-general-x4v3."""
    cfg = model.config
    lines, blob, data = [], "input_0", bytearray()
    lines.append("Input data 0 1 data")
    lines.append("Split split0 1 2 data in_a in_b")
    blob = "in_a"
    for index, layer in enumerate(model.body):
        out = f"b{index}"
        if isinstance(layer, nn.Conv2d):
            storage = storages[index // 2 % len(storages)]
            w = layer.weight.detach().numpy()
            lines.append(f"Convolution conv{index} 1 1 {blob} {out} 0={w.shape[0]} 1=3 4=1 5=1 6={w.size}")
            data += _tagged(w, storage) + layer.bias.detach().numpy().astype("<f4").tobytes()
        else:
            lines.append(f"PReLU prelu{index} 1 1 {blob} {out} 0={cfg.num_feat}")
            data += layer.weight.detach().numpy().astype("<f4").tobytes()
        blob = out
    lines.append(f"PixelShuffle ps 1 1 {blob} shuf 0={cfg.upscale}")
    lines.append(f"Interp up 1 1 in_b near 0=1 1={cfg.upscale:.6e} 2={cfg.upscale:.6e}")
    lines.append("BinaryOp add 2 1 shuf near output 0=0")
    text = f"7767517\n{len(lines)} {len(lines) + 4}\n" + "\n".join(lines) + "\n"
    param, binary = stem.with_suffix(".param"), stem.with_suffix(".bin")
    param.write_text(text)
    binary.write_bytes(bytes(data))
    return param, binary


def _fp16_rounded(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights as an fp16 ncnn file stores them: conv weights rounded, biases/slopes exact."""
    return {
        k: v.half().float() if k.endswith("weight") and v.ndim == 4 else v.clone()
        for k, v in model.state_dict().items()
    }


def test_synthetic_ncnn_gives_identical_forward(tmp_path) -> None:
    model = SRVGGNetCompact(SRVGGConfig(num_feat=8, num_conv=3, upscale=2)).eval()
    param, binary = write_srvgg_ncnn(model, tmp_path / "m")
    state = ncnn_to_state_dict(param, binary, SRVGGNetCompact(model.config))
    assert list(state) == list(model.state_dict()) and all(v.dtype == torch.float32 for v in state.values())
    reference = SRVGGNetCompact(model.config).eval()
    reference.load_state_dict(_fp16_rounded(model))
    converted = SRVGGNetCompact(model.config).eval()
    converted.load_state_dict(state)
    x = torch.rand(1, 3, 6, 5)
    assert torch.equal(converted(x), reference(x))
    assert torch.allclose(converted(x), model(x), atol=1e-2)  # fp16 storage only rounds weights
    detected = load_peer(param)  # arch read off the .param
    assert detected.config == model.config and torch.equal(detected(x), reference(x))


def test_fp32_and_table_storage(tmp_path) -> None:
    model = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=2, upscale=1)).eval()
    param, binary = write_srvgg_ncnn(model, tmp_path / "m", storages=("fp32", "table"))
    state = ncnn_to_state_dict(param, binary, SRVGGNetCompact(model.config))
    assert torch.equal(state["body.0.weight"], model.body[0].weight.detach())  # raw fp32: exact
    weight = model.body[2].weight.detach()
    levels = (weight.max() - weight.min()) / 255
    assert torch.allclose(state["body.2.weight"], weight, atol=float(levels) / 2 + 1e-7)


def test_deconvolution_layout_and_linear(tmp_path) -> None:
    model = nn.Sequential(nn.ConvTranspose2d(2, 3, 2, stride=2), nn.Conv2d(3, 1, 1, bias=False))
    w = model[0].weight.detach().numpy()  # torch (in, out, kh, kw); ncnn stores (out, in, kh, kw)
    lines = [
        "Input data 0 1 data",
        f"Deconvolution d 1 1 data a 0=3 1=2 3=2 5=1 6={w.size}",
        "Convolution c 1 1 a out 0=1 1=1 5=0 6=3",
    ]
    data = _tagged(w.transpose(1, 0, 2, 3), "fp32") + model[0].bias.detach().numpy().tobytes()
    data += _tagged(model[1].weight.detach().numpy(), "fp32")
    (tmp_path / "d.param").write_text("7767517\n3 3\n" + "\n".join(lines) + "\n")
    (tmp_path / "d.bin").write_bytes(data)
    state = ncnn_to_state_dict(tmp_path / "d.param", tmp_path / "d.bin", model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_param_parsing_arrays_and_floats() -> None:
    text = "7767517\n1 2\nConvolution c 1 1 a b 0=4 1=3 6=108 9=2 -23310=1,2.000000e-01\n"
    (layer,) = parse_param(text)
    assert layer.params[0] == 4 and layer.params[10] == [0.2] and layer.inputs == ["a"] and layer.outputs == ["b"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p, b: p.write_text("not ncnn\n"), "not an ncnn param"),
        (lambda p, b: b.write_bytes(b.read_bytes()[:-6]), "truncated"),
        (lambda p, b: b.write_bytes(b.read_bytes() + b"\0" * 8), "bytes left"),
        (lambda p, b: p.write_text(p.read_text().replace("PixelShuffle", "Fancy")), "unsupported ncnn layer"),
        (lambda p, b: p.write_text(p.read_text().replace("\n10 ", "\n7 ", 1)), "header declares"),
    ],
)
def test_malformed_files_raise_one_clear_error(tmp_path, mutate, message) -> None:
    model = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2))
    param, binary = write_srvgg_ncnn(model, tmp_path / "m")
    mutate(param, binary)
    with pytest.raises(ValueError, match=message):
        read_ncnn(param, binary)


def test_architecture_mismatch_is_reported(tmp_path) -> None:
    model = SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=2))
    param, binary = write_srvgg_ncnn(model, tmp_path / "m")
    with pytest.raises(ValueError, match="weighted modules"):
        ncnn_to_state_dict(param, binary, SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=2, upscale=2)))
    with pytest.raises(ValueError, match="outputs"):
        ncnn_to_state_dict(param, binary, SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=4)))


def test_matches_the_ncnn_runtime_when_installed(tmp_path) -> None:
    ncnn = pytest.importorskip("ncnn")
    model = SRVGGNetCompact(SRVGGConfig(num_feat=8, num_conv=2, upscale=2)).eval()
    param, binary = write_srvgg_ncnn(model, tmp_path / "m")
    x = torch.rand(1, 3, 7, 9)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
    net.load_param(str(param))
    net.load_model(str(binary))
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(np.ascontiguousarray(x[0].numpy())).clone())
    _, out = extractor.extract("output")
    expected = torch.from_numpy(np.array(out).copy())
    assert torch.allclose(load_peer(param)(x)[0], expected, atol=1e-5)
