"""Sharded checkpoints: Hugging Face shards + index, written atomically, read back strictly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from test_student import _saved_adapter_student
from test_teacher import tiny_teacher
from varestorer.checkpoint import INDEX_NAME, WEIGHTS_NAME, PretrainedMixin, load_weights, plan_shards, shard_name
from varestorer.cli.export import parse_size
from varestorer.cli.main import main
from varestorer.inference.restorer import Restorer
from varestorer.models.student import Student
from varestorer.models.teacher import Teacher


@dataclasses.dataclass(frozen=True)
class Widths:
    width: int = 16
    depth: int = 4


class Stack(PretrainedMixin, nn.Module):
    config_class = Widths

    def __init__(self, config: Widths) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.Sequential(*(nn.Linear(config.width, config.width) for _ in range(config.depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _saved_sharded(tmp_path: Path, limit: int = 1500) -> tuple[Stack, Path]:
    net = Stack(Widths())  # 4 x (16x16 + 16) float32 = 4 x 1088 bytes
    folder = tmp_path / "sharded"
    net.save_pretrained(folder, max_shard_bytes=limit)
    return net, folder


def test_sharded_save_writes_an_index_and_shards_under_the_limit(tmp_path) -> None:
    net, folder = _saved_sharded(tmp_path)
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert shards == [shard_name(i, 4) for i in (1, 2, 3, 4)] and not (folder / WEIGHTS_NAME).exists()
    assert all((folder / name).stat().st_size <= 1500 for name in shards)  # whole files, headers included
    index = json.loads((folder / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == _tensor_bytes(net)
    assert set(index["weight_map"]) == set(net.state_dict())
    assert index["weight_map"]["layers.0.weight"] == index["weight_map"]["layers.0.bias"] == shard_name(1, 4)
    for name in shards:  # each shard holds exactly what the index says
        assert set(load_file(str(folder / name))) == {k for k, v in index["weight_map"].items() if v == name}


def test_sharded_load_gives_identical_tensors_and_outputs(tmp_path) -> None:
    net, folder = _saved_sharded(tmp_path)
    state = load_weights(folder)
    assert set(state) == set(net.state_dict())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    x = torch.randn(3, 16)
    assert torch.equal(Stack.from_pretrained(folder)(x), net(x))


def test_greedy_packing_in_order_and_big_tensors_alone() -> None:
    state = {"a": torch.zeros(100), "b": torch.zeros(100), "big": torch.zeros(1000), "c": torch.zeros(10)}
    assert plan_shards(state, 1200) == [["a", "b"], ["big"], ["c"]]  # 400-byte tensors + headers
    assert plan_shards(state, 10**6) == [["a", "b", "big", "c"]]
    with pytest.raises(ValueError, match="positive number of bytes"):
        plan_shards(state, 0)


def test_no_sharding_under_the_limit_and_overwrite_replaces_the_layout(tmp_path) -> None:
    net = Stack(Widths())
    net.save_pretrained(tmp_path / "one", max_shard_bytes=10**6)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["config.json", WEIGHTS_NAME]
    _, folder = _saved_sharded(tmp_path)
    net.save_pretrained(folder, overwrite=True)  # atomic: the old shards and index go with the old folder
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", WEIGHTS_NAME]
    with pytest.raises(ValueError, match="positive number of bytes"):
        net.save_pretrained(tmp_path / "bad", max_shard_bytes=-1)
    assert not (tmp_path / "bad").exists()


def test_missing_shard_and_bad_index_are_clear_errors(tmp_path) -> None:
    _, folder = _saved_sharded(tmp_path)
    index_text = (folder / INDEX_NAME).read_text()
    (folder / shard_name(3, 4)).rename(tmp_path / "aside.safetensors")
    with pytest.raises(ValueError, match=f"shard {shard_name(3, 4)} is missing"):
        Stack.from_pretrained(folder)
    (tmp_path / "aside.safetensors").rename(folder / shard_name(3, 4))
    (folder / INDEX_NAME).write_text(index_text[:50])
    with pytest.raises(ValueError, match="unreadable shard index"):
        load_weights(folder)
    (folder / INDEX_NAME).write_text('{"metadata": {}}')
    with pytest.raises(ValueError, match="unreadable shard index"):
        load_weights(folder)
    moved = json.loads(index_text)
    moved["weight_map"]["layers.0.bias"] = shard_name(2, 4)
    (folder / INDEX_NAME).write_text(json.dumps(moved))
    with pytest.raises(ValueError, match="disagrees with its shards about 1 tensors: layers.0.bias"):
        load_weights(folder)
    escaping = json.loads(index_text)
    escaping["weight_map"]["layers.0.bias"] = "../elsewhere.safetensors"
    (folder / INDEX_NAME).write_text(json.dumps(escaping))
    with pytest.raises(ValueError, match="not a .safetensors file in this folder"):
        load_weights(folder)
    (folder / INDEX_NAME).write_text(index_text)
    save_file({"layers.0.bias": torch.zeros(16)}, str(folder / shard_name(4, 4)))  # a copy in another shard
    with pytest.raises(ValueError, match="layers.0.bias is in two shards"):
        load_weights(folder)


def test_missing_or_ambiguous_weights_name_the_folder(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weights in .*empty"):
        load_weights(tmp_path / "empty")
    _, folder = _saved_sharded(tmp_path)
    save_file({"x": torch.zeros(1)}, str(folder / WEIGHTS_NAME))
    with pytest.raises(ValueError, match="holds both"):
        load_weights(folder)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("15MB", 15 * 10**6), ("500KB", 500_000), ("2GB", 2 * 10**9), ("16MiB", 16 * 2**20), ("1GiB", 2**30)]
    + [("1.5kb", 1500), ("123456", 123456), (" 7 B ", 7), ("123456789012345678901", 123456789012345678901)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "15XB", "MB", "-3", "0", "0.1B", "1e6"])
def test_parse_size_refuses_bad_strings(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_export_with_max_shard_size_loads_back(tmp_path, capsys) -> None:
    _saved_adapter_student(tmp_path)
    export = ["export", str(tmp_path / "student"), "--merge", "--dtype", "float16"]
    assert main([*export, "-o", str(tmp_path / "one")]) == 0
    single = (tmp_path / "one" / WEIGHTS_NAME).stat().st_size
    limit = single // 3
    assert main([*export, "-o", str(tmp_path / "sharded"), "--max-shard-size", str(limit)]) == 0
    assert "shards" in capsys.readouterr().out
    shards = list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3 and all(p.stat().st_size <= limit for p in shards)
    lq = torch.rand(1, 3, 16, 16)
    unsharded = Student.from_pretrained(tmp_path / "one")
    with torch.no_grad():
        expected = unsharded(lq)
        assert torch.equal(Student.from_pretrained(tmp_path / "sharded")(lq), expected)
    restorer = Restorer.from_pretrained(tmp_path / "sharded", device="cpu", dtype=torch.float32, edge_context=0)
    assert torch.allclose(restorer(lq), expected, atol=1e-5)
    assert main(["inspect", str(tmp_path / "sharded"), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["tensors"]) == set(unsharded.state_dict())
    assert main([*export, "-o", str(tmp_path / "bad"), "--max-shard-size", "15XB"]) == 2
    assert "--max-shard-size: not a size: '15XB'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_teacher_shards_both_of_its_models(tmp_path) -> None:
    teacher = tiny_teacher()
    teacher.save_pretrained(tmp_path / "teacher", max_shard_bytes=200_000)
    for part in ("tokenizer", "transformer"):
        assert (tmp_path / "teacher" / part / INDEX_NAME).is_file()
    loaded = Teacher.from_pretrained(tmp_path / "teacher")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in teacher.state_dict().items())
