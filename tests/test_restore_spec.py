"""The declared restore contract: every restorable model returns a ``RestoreSpec``, wrappers derive theirs
from the inner one whole, and the ``Restorer`` reads only the spec."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch
from torch import nn

from varestorer.archs.rrdbnet import RRDBNet, RRDBNetConfig
from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.families import families
from varestorer.inference.reconstruction import RoundTrip, ScaleSpec
from varestorer.inference.restorer import Restorer
from varestorer.models.lq_conditioned import LQConditionedVAR
from varestorer.models.precleaner import PreCleaned, PreCleaner
from varestorer.models.student_config import StudentConfig
from varestorer.restore_spec import RestoreSpec, restore_spec_of
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.transformer.config import transformer_preset

# A spec whose every field differs from the default: a wrapper that drops one shows it.
ODD = RestoreSpec(
    scale=2,
    input_size=8,
    size_multiple=2,
    default_dtype="bfloat16",
    default_tile_overlap=3,
    default_color_fix="adain",
    color_fix_levels=3,
    edge_context=1,
    reads_prompts=True,
    purpose="restoration",
    sets_precision=True,
    tile_streams=True,
)


class Declared(nn.Module):
    """A model with a declared spec and decoy attributes of the old implicit contract."""

    default_color_fix = "wavelet"  # ignored: only the spec counts
    edge_context = 7
    default_tile_overlap = 5

    def __init__(self, spec: RestoreSpec) -> None:
        super().__init__()
        self.restore_spec = spec
        self.conv = nn.Conv2d(3, 3, 1)

    def set_precision(self, dtype: torch.dtype) -> None:
        self.to(dtype)

    def forward(self, lq: torch.Tensor, condition: object = None, streams: object = None) -> torch.Tensor:
        return nn.functional.interpolate(self.conv(lq.to(self.conv.weight.dtype)), scale_factor=self.restore_spec.scale)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return torch.zeros(len(prompts))


def test_every_field_differs_from_its_default() -> None:
    default = RestoreSpec(scale=1)
    assert all(getattr(ODD, f.name) != getattr(default, f.name) for f in fields(RestoreSpec))


def test_the_restorer_reads_only_the_spec() -> None:
    restorer = Restorer(Declared(ODD), device="cpu")
    assert restorer.spec == ODD and restorer.dtype == torch.bfloat16
    assert (restorer.scale, restorer.input_size, restorer.size_multiple) == (2, 8, 2)
    assert (restorer.tile_overlap, restorer.color_fix, restorer.edge_context) == (3, "adain", 1)
    assert restorer.color_fix_levels == 3
    plain = Restorer(Declared(replace(ODD, reads_prompts=False, default_dtype=None)), device="cpu")
    assert plain.dtype == torch.float32 and plain.color_fix == "adain"
    with pytest.raises(ValueError, match="takes no text prompt"):
        plain.restore_tensor(torch.rand(1, 3, 8, 8), prompt="a cat")


def test_the_precleaner_wrapper_keeps_the_whole_spec() -> None:
    inner = Declared(ODD)
    wrapped = PreCleaned(inner, PreCleaner(nn.Identity()))
    assert wrapped.restore_spec == ODD
    assert (wrapped.scale, wrapped.input_size, wrapped.size_multiple) == (2, 8, 2)
    assert Restorer(inner, device="cpu", precleaner=PreCleaner(nn.Identity())).spec == ODD


def test_a_precleaned_round_trip_keeps_its_zero_edge_context() -> None:
    # PreCleaned used to copy five attributes by hand and drop edge_context: 4 px of mirrored border
    # came back around a round trip that wants none.
    tokenizer = MultiScaleTokenizer(tokenizer_preset("tiny")).eval()
    round_trip = RoundTrip(tokenizer, ScaleSpec("none"), tile=32)
    assert Restorer(round_trip, device="cpu").edge_context == 0
    restorer = Restorer(round_trip, device="cpu", precleaner=PreCleaner(nn.Identity()))
    assert restorer.edge_context == 0 and restorer.size_multiple == int(tokenizer.stride)


def test_the_ablation_keeps_its_students_tile_overlap_and_colour_fix() -> None:
    # LQConditionedVAR used to forward scale/input_size/colour fix by hand and drop default_tile_overlap:
    # a tile overlap in an ablation's config was silently ignored.
    config = StudentConfig(
        tokenizer=tokenizer_preset("tiny"),
        transformer=transformer_preset("tiny"),
        image_size=64,
        scale=4,
        lora_rank=2,
        tile_overlap=3,
        color_fix="wavelet",
    )
    model = LQConditionedVAR(config)
    assert model.restore_spec == model.base.restore_spec
    restorer = Restorer(model, device="cpu")
    assert (restorer.tile_overlap, restorer.color_fix, restorer.input_size) == (3, "wavelet", 16)
    assert not restorer.spec.reads_prompts  # the tiny student has no text encoder


def test_peers_declare_their_specs() -> None:
    assert SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1, upscale=1)).restore_spec == RestoreSpec(
        scale=1, purpose="restoration"
    )
    rrdb = RRDBNet(RRDBNetConfig(num_feat=4, num_block=1, num_grow_ch=2, scale=2))
    assert (rrdb.scale, rrdb.input_size, rrdb.size_multiple) == (2, None, 2)
    for entry in families(restorable=True).values():  # every restorable family declares a spec
        assert isinstance(getattr(entry.model_class(), "restore_spec", None), property), entry.name


def test_a_third_party_model_gets_the_spec_of_its_three_attributes() -> None:
    class ThirdParty(nn.Module):
        scale, input_size, size_multiple = 3, None, 1
        default_color_fix = "wavelet"  # not part of the protocol: not read

    assert restore_spec_of(ThirdParty()) == RestoreSpec(scale=3)
    ThirdParty.encode_prompts = lambda self, prompts: prompts  # type: ignore[attr-defined]
    assert restore_spec_of(ThirdParty()).reads_prompts
    with pytest.raises(TypeError, match="lacks 'scale': it does not implement OneStepSR"):
        restore_spec_of(nn.Identity())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scale": 0}, "scale, size_multiple and input_size >= 1"),
        ({"default_dtype": "float64"}, "default_dtype must be one of"),
        ({"default_color_fix": "histogram"}, "default_color_fix must be one of"),
        ({"edge_context": -1}, "edge_context and default_tile_overlap must be >= 0"),
    ],
)
def test_a_bad_spec_is_a_one_line_error(changes, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        replace(RestoreSpec(scale=1), **changes)
    assert "\n" not in str(info.value)
