"""The one registry of model families: consistent entries, and adding a family is one entry.

``TinyUpscaler`` below is a complete worked example of a new family: its config, its module (with
``config_class`` and ``from_pretrained``/``save_pretrained`` from ``PretrainedMixin``), its presets, and ONE
registry entry (here put in with ``monkeypatch.setitem``; in the package it is a line in
``src/varestorer/families.py``). With that entry alone the Restorer, ``inspect`` and ``export`` know it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from varestorer.checkpoint import PretrainedMixin
from varestorer.families import FAMILIES, Family, families, family, family_named, load_attribute


@dataclass(frozen=True)
class TinyUpscalerConfig:
    scale: int = 2
    """Native factor."""
    width: int = 4
    """Hidden channels."""


TINY_UPSCALER_PRESETS = {"tiny-x2": TinyUpscalerConfig(), "tiny-x3": TinyUpscalerConfig(scale=3)}


class TinyUpscaler(PretrainedMixin, nn.Module):
    """Bicubic plus a learned residual; implements ``OneStepSR``."""

    config_class = TinyUpscalerConfig
    input_size = None
    size_multiple = 1

    def __init__(self, config: TinyUpscalerConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.body = nn.Sequential(
            nn.Conv2d(3, config.width, 3, padding=1), nn.ReLU(), nn.Conv2d(config.width, 3, 3, padding=1)
        )

    def forward(self, lq_B3HW: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lq_B3HW, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up + self.body(up)


TINY_FAMILY = Family(
    name="tinyup",
    model="test_families:TinyUpscaler",
    config="test_families:TinyUpscalerConfig",
    presets="test_families:TINY_UPSCALER_PRESETS",
    restorable=True,
)


@pytest.fixture
def with_tiny_family(monkeypatch):
    monkeypatch.setitem(FAMILIES, "TinyUpscaler", TINY_FAMILY)


def test_every_entry_resolves_and_agrees_with_its_classes() -> None:
    names = [entry.name for entry in FAMILIES.values()]
    assert len(names) == len(set(names)), "short family names must be unique"
    for model_type, entry in FAMILIES.items():
        cls = entry.model_class()
        assert cls.__name__ == model_type, f"{model_type}: config.json's model_type is the class name"
        assert cls.config_class is entry.config_class(), f"{model_type}: config entry != {cls.__name__}.config_class"
        assert is_dataclass(entry.config_class()) and entry.config_class().__dataclass_params__.frozen
        for preset, config in entry.preset_table().items():
            assert isinstance(config, entry.config_class()), f"{entry.name}:{preset}"
        for reader in entry.readers:  # "module:function" of a foreign-format reader
            assert callable(load_attribute(reader)), f"{model_type}: {reader}"
        for capability in ("restorable", "exportable", "peer"):
            if getattr(entry, capability):
                assert callable(getattr(cls, "from_pretrained", None)), model_type


def test_lookups_and_clear_errors() -> None:
    assert family("Student").exportable and family_named("student")[0] == "Student"
    assert set(families(peer=True)) == {"SRVGGNetCompact", "RRDBNet"}
    assert "Teacher" not in families(restorable=True)
    with pytest.raises(ValueError, match="unknown model type 'Mystery'"):
        family("Mystery")
    with pytest.raises(ValueError, match="unknown model family 'vae'"):
        family_named("vae")
    with pytest.raises(TypeError, match="no field"):
        families(flies=True)
    assert load_attribute("varestorer.families:FAMILIES") is FAMILIES
    assert {f.name for f in fields(Family)} >= {"restorable", "exportable", "trains", "has_tokenizer", "peer"}


def test_a_new_family_is_one_entry(with_tiny_family, tmp_path, capsys) -> None:
    from varestorer.cli.main import main
    from varestorer.inference.restorer import Restorer

    torch.manual_seed(0)
    model = TinyUpscaler(TINY_UPSCALER_PRESETS["tiny-x3"]).eval()
    model.save_pretrained(tmp_path / "tiny")
    # the Restorer loads it by its config.json model_type ...
    restorer = Restorer.from_pretrained(tmp_path / "tiny", device="cpu", dtype="float32", edge_context=0)
    lq = torch.rand(1, 3, 8, 8)
    assert restorer(lq).shape == (1, 3, 24, 24)
    with torch.no_grad():
        assert torch.allclose(restorer(lq), model(lq).clamp(0, 1), atol=1e-6)
    # ... inspect builds its presets and reads its checkpoint folders ...
    assert main(["inspect", "tinyup:tiny-x2"]) == 0
    assert "TinyUpscaler" in capsys.readouterr().out
    assert main(["inspect", "tiny-x3", "--json"]) == 0  # unambiguous preset names resolve unqualified
    assert main(["inspect", str(tmp_path / "tiny"), "--depth", "1"]) == 0
    assert "body: Sequential" in capsys.readouterr().out
    # ... and export refuses it with the capability it lacks
    assert main(["export", str(tmp_path / "tiny"), "-o", str(tmp_path / "out"), "--merge"]) == 2
    assert "not an exportable model; exportable types: Student, LQConditionedVAR" in capsys.readouterr().err


def test_without_the_entry_the_family_is_unknown(tmp_path) -> None:
    from varestorer.inference.restorer import Restorer

    TinyUpscaler(TinyUpscalerConfig()).save_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match="holds a TinyUpscaler, not a restorable model"):
        Restorer.from_pretrained(tmp_path / "tiny")


# ------------------------------------------------------------------------------ a new foreign weight format
# The worked example of issue 33's "new foreign weight format = 2 places": (1) a reader beside the family
# (here ``read_tinyup``: detect by suffix and header, then load) and (2) its name in the entry's ``readers``.
# ``resolve`` (the one loading door), ``Restorer.from_pretrained`` and ``varestorer restore --model`` take it.
TINYUP_MAGIC = "tinyup-v1"


def read_tinyup(source) -> TinyUpscaler | None:
    """A ``.tinyup`` file: a torch file ``{"magic", "scale", "width", "weights"}`` written by another project."""
    if source.path is None or source.path.suffix != ".tinyup":
        return None
    blob = torch.load(source.path, map_location="cpu", weights_only=True)
    if blob.get("magic") != TINYUP_MAGIC:
        raise ValueError(f"{source.path}: not a {TINYUP_MAGIC} file")
    model = TinyUpscaler(TinyUpscalerConfig(scale=blob["scale"], width=blob["width"]))
    model.load_state_dict(blob["weights"])
    return model.eval()


def test_a_new_foreign_format_is_a_reader_and_its_name_in_the_entry(monkeypatch, tmp_path, capsys) -> None:
    from varestorer.cli.main import main
    from varestorer.families import resolve
    from varestorer.inference.restorer import Restorer

    model = TinyUpscaler(TinyUpscalerConfig(scale=2, width=3)).eval()
    blob = {"magic": TINYUP_MAGIC, "scale": 2, "width": 3, "weights": model.state_dict()}
    torch.save(blob, tmp_path / "net.tinyup")
    with pytest.raises(ValueError, match="net.tinyup: not a restorable model: neither a checkpoint folder nor"):
        resolve(tmp_path / "net.tinyup")  # without the reader nothing knows the format
    monkeypatch.setitem(FAMILIES, "TinyUpscaler", replace(TINY_FAMILY, readers=("test_families:read_tinyup",)))
    loaded = resolve(tmp_path / "net.tinyup")
    assert isinstance(loaded, TinyUpscaler) and all(
        torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items()
    )
    restorer = Restorer.from_pretrained(tmp_path / "net.tinyup", device="cpu", dtype="float32", edge_context=0)
    lq = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(restorer(lq), model(lq).clamp(0, 1), atol=1e-6)
    Image.new("RGB", (6, 5)).save(tmp_path / "a.png")
    argv = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "net.tinyup")]
    assert main(argv) == 0 and Image.open(tmp_path / "out" / "a.png").size == (12, 10)
    torch.save({"magic": "other"}, tmp_path / "bad.tinyup")
    with pytest.raises(ValueError, match="bad.tinyup: not a tinyup-v1 file"):
        resolve(tmp_path / "bad.tinyup")


def test_embedded_names_are_strings_and_paths_are_paths(tmp_path, monkeypatch) -> None:
    from varestorer.families import EMBEDDED_MODELS, WEIGHTS_DIR, embedded_folder, locate, resolve

    assert embedded_folder("realesr-general-x4v3") == WEIGHTS_DIR / EMBEDDED_MODELS["realesr-general-x4v3"]
    assert embedded_folder(Path("realesr-general-x4v3")) is None and embedded_folder("nope") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "realesr-general-x4v3").mkdir()  # a local folder of that name: the name still means the embedded
    assert locate("realesr-general-x4v3") == embedded_folder("realesr-general-x4v3")
    assert type(resolve("realesr-general-x4v3", require="peer", what="a peer")).__name__ == "SRVGGNetCompact"
    with pytest.raises(FileNotFoundError, match="no config.json|config.json"):
        resolve(Path("realesr-general-x4v3"))  # ... and a Path is that (empty) local folder
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at missing \(embedded model names: default"):
        resolve("missing")
