from __future__ import annotations

import dataclasses
import json
from typing import Literal

import pytest
import torch
from torch import nn

from varestorer.checkpoint import PretrainedMixin, load_state_dict, read_config
from varestorer.config import config_from_dict, config_to_dict, load_config_file


@dataclasses.dataclass(frozen=True)
class Inner:
    width: int = 4
    mults: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "x"
    rate: float = 1.0
    mode: Literal["a", "b"] = "a"
    inner: Inner = dataclasses.field(default_factory=Inner)
    limit: int | None = None


class Net(PretrainedMixin, nn.Module):
    config_class = Outer

    def __init__(self, config: Outer) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.inner.width, 3)
        self.tied = self.linear  # shared tensors must still save

    def forward(self, x):
        return self.linear(x)


def test_round_trip_and_strictness(tmp_path) -> None:
    cfg = Outer(name="y", rate=2, inner=Inner(width=5, mults=(1, 2, 4)), limit=3)
    assert config_from_dict(Outer, config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        config_from_dict(Outer, {"nmae": "typo"})
    with pytest.raises(ValueError, match="not one of"):
        config_from_dict(Outer, {"mode": "c"})
    with pytest.raises(ValueError, match="expected int"):
        config_from_dict(Outer, {"inner": {"width": "4"}})
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nname = "t"\n[model.inner]\nmults = [1, 8]\n')
    assert load_config_file(Outer, toml, section="model").inner.mults == (1, 8)
    with pytest.raises(ValueError, match="no \\[train\\] section"):
        load_config_file(Outer, toml, section="train")


def test_save_load_gives_identical_outputs(tmp_path) -> None:
    net = Net(Outer(inner=Inner(width=6)))
    net.save_pretrained(tmp_path / "ckpt")
    assert read_config(tmp_path / "ckpt")["model_type"] == "Net"
    again = Net.from_pretrained(tmp_path / "ckpt")
    x = torch.randn(2, 6)
    assert torch.equal(net(x), again(x))
    with pytest.raises(FileExistsError):
        net.save_pretrained(tmp_path / "ckpt")
    net.save_pretrained(tmp_path / "ckpt", overwrite=True)


def test_corrupt_and_mismatched_checkpoints_are_clear_errors(tmp_path) -> None:
    net = Net(Outer())
    net.save_pretrained(tmp_path / "a")
    weights = tmp_path / "a" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        Net.from_pretrained(tmp_path / "a")
    Net(Outer(inner=Inner(width=7))).save_pretrained(tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "config.json").read_text())
    meta["config"]["inner"]["width"] = 4
    (tmp_path / "b" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="wrong shape: linear.weight"):
        Net.from_pretrained(tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        Net.from_pretrained(tmp_path / "nothing")
    (tmp_path / "evil.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError):
        load_state_dict(tmp_path / "evil.pth")


def test_unknown_preset_names_are_one_line_errors_listing_the_names() -> None:
    from varestorer.degradation.pipeline import DegradationPipeline, degrade
    from varestorer.tokenizer.config import tokenizer_preset
    from varestorer.tokenizer.taef2 import TAEF2Tokenizer
    from varestorer.transformer.config import transformer_preset

    assert transformer_preset("tiny", depth=3).depth == 3 and tokenizer_preset("tiny").token_dim > 0
    for call, what in [
        (lambda: tokenizer_preset("nope"), "tokenizer preset"),
        (lambda: transformer_preset("nope"), "transformer preset"),
        (lambda: TAEF2Tokenizer.from_preset("nope"), "TAEF2 preset"),
        (lambda: DegradationPipeline.from_preset("nope"), "degradation preset"),
        (lambda: degrade(torch.rand(3, 8, 8), "nope"), "degradation preset"),
    ]:
        with pytest.raises(ValueError, match=rf"^unknown {what} 'nope'; choose from \w") as error:
            call()
        assert "\n" not in str(error.value)
