"""Weight-only int8 checkpoints: per-channel error bound, transparent strict loading, shards, inspect, export."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from test_student import _saved_adapter_student
from varestorer.checkpoint import INDEX_NAME, WEIGHTS_NAME, PretrainedMixin, load_weights
from varestorer.cli.main import main
from varestorer.inference.restorer import Restorer
from varestorer.models.student import Student
from varestorer.storage import (
    METADATA_KEY,
    SCALE_SUFFIX,
    SCHEME,
    dequantize,
    is_quantizable,
    quantize,
    quantize_state_dict,
)


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    width: int = 64
    depth: int = 3


class MLP(PretrainedMixin, nn.Module):
    """Linear layers (quantised), LayerNorms and biases (kept float) and a 2-D buffer (never quantised)."""

    config_class = MLPConfig

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(nn.Linear(config.width, config.width) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        self.register_buffer("table", torch.linspace(-3, 3, 32 * config.width).reshape(32, config.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.norm(x) + self.table[0]


def _mlp(width: int = 64) -> MLP:
    torch.manual_seed(0)
    return MLP(MLPConfig(width=width)).eval()


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((64, 48), torch.float32),
        ((16, 8, 3, 3), torch.float32),
        ((33, 40), torch.bfloat16),
        ((8, 4, 5, 7), torch.float16),
    ],
)
def test_round_trip_error_is_at_most_half_a_scale_per_channel(shape, dtype) -> None:
    weight = (torch.randn(shape) * torch.logspace(-3, 1, shape[0]).reshape(-1, *[1] * (len(shape) - 1))).to(dtype)
    weight[1] = 0  # a zero channel: scale 0, exact
    q, scale = quantize(weight)
    assert q.dtype == torch.int8 and q.shape == weight.shape and scale.dtype == torch.float32
    assert scale.shape == (shape[0],) and int(q.abs().max()) == 127 and int(q.min()) >= -127
    error = (dequantize(q, scale).double() - weight.double()).reshape(shape[0], -1).abs().amax(dim=1)
    # scale/2 from rounding, plus float32 rounding of q * scale (|q| <= 127: < 1e-5 relative to the scale)
    assert bool((error <= scale.double() / 2 * (1 + 1e-4)).all()), (error / scale).max()
    assert float(error[1]) == 0 and float(scale[1]) == 0
    assert float((error / scale.double().clamp_min(1e-30)).max()) > 0.3  # rounding, not exact: the bound is tight


def test_only_large_float_weights_are_quantised() -> None:
    assert is_quantizable(torch.zeros(32, 32))  # 1024 elements
    assert not is_quantizable(torch.zeros(31, 32))  # too small: kept float
    assert not is_quantizable(torch.zeros(4096))  # 1-D (bias, norm)
    assert not is_quantizable(torch.zeros(1, 1, 6, 256))  # one output channel (a modulation table)
    assert not is_quantizable(torch.zeros(64, 64, dtype=torch.int64))
    assert not is_quantizable(torch.full((64, 64), float("-inf")))  # a mask: no int8 scale holds it
    state = quantize_state_dict(
        {"w": torch.randn(32, 32), "b": torch.randn(32), "buf": torch.randn(32, 32)}, keep={"buf"}
    )
    assert list(state) == ["w", "w" + SCALE_SUFFIX, "b", "buf"]
    assert [t.dtype for t in state.values()] == [torch.int8, torch.float32, torch.float32, torch.float32]
    with pytest.raises(ValueError, match="scale suffix"):
        quantize_state_dict({"x" + SCALE_SUFFIX: torch.randn(32, 32)})


def test_int8_model_loads_transparently_and_stays_close_to_float32(tmp_path) -> None:
    model = _mlp()
    model.save_pretrained(tmp_path / "fp32")
    model.save_pretrained(tmp_path / "int8", dtype="int8")
    stored = load_file(str(tmp_path / "int8" / WEIGHTS_NAME))
    assert stored["layers.0.weight"].dtype == torch.int8 and stored["layers.0.weight.int8_scale"].shape == (64,)
    assert stored["layers.0.bias"].dtype == stored["norm.weight"].dtype == stored["table"].dtype == torch.float32
    assert torch.equal(stored["table"], model.table)  # buffers are stored exactly
    with safe_open(str(tmp_path / "int8" / WEIGHTS_NAME), framework="pt") as handle:
        assert handle.metadata()[METADATA_KEY] == SCHEME
    size = (tmp_path / "int8" / WEIGHTS_NAME).stat().st_size
    assert size < 0.45 * (tmp_path / "fp32" / WEIGHTS_NAME).stat().st_size  # weights / 4; the 8 KB buffer stays
    assert set(load_weights(tmp_path / "int8")) == set(model.state_dict())  # no scale keys after loading
    loaded = MLP.from_pretrained(tmp_path / "int8")
    assert all(p.dtype == torch.float32 for p in loaded.state_dict().values())
    x = torch.randn(16, 64)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    # Tolerance: per-weight error <= scale/2 = max|row|/254; three 64-wide tanh layers and a LayerNorm keep
    # it at 0.2% of the output norm, 0.025 at most (measured); bound: 1% relative, 0.05 absolute (outputs O(1)).
    assert not torch.equal(got, expected)
    assert float((got - expected).norm() / expected.norm()) < 1e-2 and float((got - expected).abs().max()) < 0.05


def test_sharded_int8_loads_like_unsharded_even_with_a_scale_apart_from_its_tensor(tmp_path) -> None:
    model = _mlp()
    model.save_pretrained(tmp_path / "one", dtype="int8")
    model.save_pretrained(tmp_path / "sharded", dtype="int8", max_shard_bytes=6_000)
    model.save_pretrained(tmp_path / "apart", dtype="int8", max_shard_bytes=1)  # every tensor in its own shard
    single = load_weights(tmp_path / "one")
    for folder in ("sharded", "apart"):
        index = json.loads((tmp_path / folder / INDEX_NAME).read_text())
        assert index["metadata"][METADATA_KEY] == SCHEME and "layers.0.weight.int8_scale" in index["weight_map"]
        assert len(set(index["weight_map"].values())) >= 3
        state = load_weights(tmp_path / folder)
        assert set(state) == set(single) and all(torch.equal(state[k], single[k]) for k in single)
    weight_map = json.loads((tmp_path / "apart" / INDEX_NAME).read_text())["weight_map"]
    assert weight_map["layers.0.weight"] != weight_map["layers.0.weight.int8_scale"]


def _rewrite(folder: Path, change) -> None:
    """Apply ``change`` to the tensors of ``folder``'s model.safetensors, keeping the int8 metadata."""
    path = folder / WEIGHTS_NAME
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt", METADATA_KEY: SCHEME})


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.pop("layers.1.weight.int8_scale"), "layers.1.weight is stored as int8 but its scale"),
        (lambda t: t.update({"layers.1.weight.int8_scale": torch.ones(63)}), r"has shape \(63,\), expected \(64,\)"),
        (lambda t: t.update({"layers.1.weight.int8_scale": torch.ones(64, 1)}), r"has shape \(64, 1\), expected"),
        (lambda t: t.update({"layers.1.weight.int8_scale": torch.full((64,), float("nan"))}), "not a valid scale"),
        (lambda t: t.update({"layers.1.weight": t["layers.1.weight"].float()}), "not an int8 tensor"),
        (lambda t: t.pop("layers.1.weight"), "a scale without its tensor layers.1.weight"),
    ],
)
def test_a_missing_or_mismatched_scale_is_a_one_line_error(tmp_path, capsys, change, message) -> None:
    _mlp().save_pretrained(tmp_path / "m", dtype="int8")
    _rewrite(tmp_path / "m", change)
    with pytest.raises(ValueError, match=message) as error:
        MLP.from_pretrained(tmp_path / "m")
    assert "\n" not in str(error.value) and str(tmp_path / "m") in str(error.value)
    assert main(["inspect", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err) and "Traceback" not in err


def test_an_unknown_storage_scheme_is_refused(tmp_path) -> None:
    _mlp().save_pretrained(tmp_path / "m", dtype="int8")
    tensors = load_file(str(tmp_path / "m" / WEIGHTS_NAME))
    save_file(tensors, str(tmp_path / "m" / WEIGHTS_NAME), metadata={METADATA_KEY: "int4-groupwise"})
    with pytest.raises(ValueError, match="stored as 'int4-groupwise', which this varestorer cannot read"):
        load_weights(tmp_path / "m")


def test_bad_storage_dtype_is_refused_before_writing(tmp_path) -> None:
    with pytest.raises(ValueError, match="storage dtype must be one of float32, float16, bfloat16 or int8"):
        _mlp().save_pretrained(tmp_path / "m", dtype="int4")
    assert not (tmp_path / "m").exists()


def test_inspect_shows_the_stored_dtype(tmp_path, capsys) -> None:
    _mlp().save_pretrained(tmp_path / "m", dtype="int8", max_shard_bytes=6_000)
    assert main(["inspect", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert f"stored as float32 x6, int8 x3 ({SCHEME}" in out
    assert "  layers.0.weight  (64, 64)  int8" in out and "  layers.0.bias  (64,)  float32" in out
    assert SCALE_SUFFIX not in out  # scales are storage, not model tensors
    assert main(["inspect", str(tmp_path / "m"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dtypes"]["layers.2.weight"] == "int8" and report["dtypes"]["table"] == "float32"
    assert report["tensors"]["layers.2.weight"] == [64, 64] and "problem" not in report
    assert report["params"] == sum(p.numel() for p in _mlp().parameters()) + 32 * 64  # the buffer too


def test_export_dtype_int8_is_smaller_than_float16_and_restores(tmp_path, capsys) -> None:
    student = _saved_adapter_student(tmp_path)
    export = ["export", str(tmp_path / "student"), "--merge", "--dtype"]
    assert main([*export, "float16", "-o", str(tmp_path / "half")]) == 0
    assert main([*export, "int8", "-o", str(tmp_path / "int8"), "--max-shard-size", "150KB"]) == 0
    assert "int8, " in capsys.readouterr().out
    half = (tmp_path / "half" / WEIGHTS_NAME).stat().st_size
    shards = list((tmp_path / "int8").glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and all(f.stat().st_size <= 150_000 for f in shards)  # the limit holds for int8 too
    int8 = sum(f.stat().st_size for f in shards)
    assert int8 < 0.65 * half  # the tiny student's many small tensors stay float32
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        reference = student.eval()(lq)
        restored = Student.from_pretrained(tmp_path / "int8")(lq)
    # as the float16 export test: hard bit decisions may flip, so the mean, not the max, is bounded
    assert restored.dtype == torch.float32 and float((restored - reference).abs().mean()) < 0.05
    restorer = Restorer.from_pretrained(tmp_path / "int8", device="cpu", dtype=torch.float32, edge_context=0)
    assert torch.allclose(restorer(lq), restored, atol=1e-5)
