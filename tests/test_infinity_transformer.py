"""The ``infinity-2b`` preset has exactly Infinity-2B's tensors; official-format files load strictly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from varestorer.transformer.config import TRANSFORMER_PRESETS
from varestorer.transformer.infinity import load_infinity_transformer
from varestorer.transformer.model import NextScaleTransformer

# Infinity-2B's global tensors (Infinity `infinity/models/infinity.py`, docs/sources.md).
GLOBAL_2B = {
    "cfg_uncond": (512, 2048),
    "text_norm.weight": (2048,),
    "text_proj_for_sos.ca.mat_q": (1, 16, 128),
    "text_proj_for_sos.ca.mat_kv.weight": (4096, 2048),
    "text_proj_for_sos.ca.v_bias": (2048,),
    "text_proj_for_sos.ca.zero_k_bias": (2048,),
    "text_proj_for_sos.ca.proj.weight": (2048, 2048),
    "text_proj_for_sos.ca.proj.bias": (2048,),
    "text_proj_for_ca.0.weight": (2048, 2048),
    "text_proj_for_ca.0.bias": (2048,),
    "text_proj_for_ca.2.weight": (2048, 2048),
    "text_proj_for_ca.2.bias": (2048,),
    "pos_start": (1, 1, 2048),
    "lvl_embed.weight": (15, 2048),
    "word_embed.weight": (2048, 32),
    "word_embed.bias": (2048,),
    "shared_ada_lin.1.weight": (12288, 2048),
    "shared_ada_lin.1.bias": (12288,),
    "head_nm.ada_lin.1.weight": (4096, 2048),
    "head_nm.ada_lin.1.bias": (4096,),
    "head.weight": (64, 2048),
    "head.bias": (64,),
}
# ... and the tensors of every block.
BLOCK_2B = {
    "sa.scale_mul_1H11": (1, 16, 1, 1),
    "sa.mat_qkv.weight": (6144, 2048),
    "sa.q_bias": (2048,),
    "sa.v_bias": (2048,),
    "sa.zero_k_bias": (2048,),
    "sa.proj.weight": (2048, 2048),
    "sa.proj.bias": (2048,),
    "ca.mat_q.weight": (2048, 2048),
    "ca.mat_q.bias": (2048,),
    "ca.mat_kv.weight": (4096, 2048),
    "ca.v_bias": (2048,),
    "ca.zero_k_bias": (2048,),
    "ca.proj.weight": (2048, 2048),
    "ca.proj.bias": (2048,),
    "ffn.fc1.weight": (8192, 2048),
    "ffn.fc1.bias": (8192,),
    "ffn.fc2.weight": (2048, 8192),
    "ffn.fc2.bias": (2048,),
    "ca_norm.weight": (2048,),
    "ca_norm.bias": (2048,),
    "ada_gss": (1, 1, 6, 2048),
}


def test_infinity_2b_names_and_shapes_match_the_official_checkpoint() -> None:
    with torch.device("meta"):
        model = NextScaleTransformer(TRANSFORMER_PRESETS["infinity-2b"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = dict(GLOBAL_2B)
    for c in range(8):
        for j in range(4):
            expected.update({f"block_chunks.{c}.module.{j}.{k}": v for k, v in BLOCK_2B.items()})
    assert shapes == expected
    params = sum(p.numel() for p in model.parameters())
    assert 2.19e9 < params < 2.21e9  # research: ~67.15M per block x 32 + ~55.8M global = ~2.20B


def test_infinity_125m_uses_four_chunks_of_three_blocks() -> None:
    with torch.device("meta"):
        model = NextScaleTransformer(TRANSFORMER_PRESETS["infinity-125m"])
    keys = model.state_dict()
    assert "block_chunks.3.module.2.sa.mat_qkv.weight" in keys and "block_chunks.4.module.0.ada_gss" not in keys
    assert tuple(keys["block_chunks.0.module.0.sa.scale_mul_1H11"].shape) == (1, 8, 1, 1)
    assert tuple(keys["head.weight"].shape) == (64, 768)


def _official_like(tmp_path, wrap: bool):
    config = dataclasses.replace(TRANSFORMER_PRESETS["tiny"], block_chunks=2, rope_extent="last")
    model = NextScaleTransformer(config)
    state = dict(model.state_dict())
    state["attn_bias_for_masking"] = torch.zeros(1, 1, 30, 30)  # derived buffer Infinity may save
    path = tmp_path / "ckpt.pth"
    torch.save({"trainer": {"gpt_fsdp": state}} if wrap else state, path)
    return config, model, path


@pytest.mark.parametrize("wrap", [False, True])
def test_bare_and_training_checkpoints_load(tmp_path, wrap: bool) -> None:
    config, model, path = _official_like(tmp_path, wrap)
    loaded = load_infinity_transformer(path, config)
    x = torch.randn(1, 29, 8)
    schedule = ((1, 1), (2, 2), (3, 3), (4, 4))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, schedule, None), model.eval()(x, schedule, None))


def test_missing_and_unexpected_keys_are_reported(tmp_path) -> None:
    config = dataclasses.replace(TRANSFORMER_PRESETS["tiny"], block_chunks=2)
    state = dict(NextScaleTransformer(config).state_dict())
    del state["block_chunks.1.module.0.ca.mat_kv.weight"]
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"1 missing: block_chunks.1.module.0.ca.mat_kv.weight.*1 unexpected: extra"):
        load_infinity_transformer(tmp_path / "bad.pth", config)
    with pytest.raises(ValueError, match="gpt_ema_fsdp"):
        torch.save({"trainer": {"gpt_fsdp": state}}, tmp_path / "t.pth")
        load_infinity_transformer(tmp_path / "t.pth", config, ema=True)


def test_inspect_lists_every_infinity_2b_tensor(capsys) -> None:
    import json

    from varestorer.cli.main import main

    assert main(["inspect", "infinity-2b", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == report["trainable"] and 2.19e9 < report["params"] < 2.21e9
    assert len(report["tensors"]) == len(GLOBAL_2B) + 32 * len(BLOCK_2B)
    assert report["tensors"]["block_chunks.7.module.3.ffn.fc2.weight"] == [2048, 8192]
    assert main(["inspect", "transformer:small", "--depth", "1"]) == 0
    assert "NextScaleTransformer" in capsys.readouterr().out


# Infinity's TextAttentivePool: text_width / 128 heads that split the transformer width C, keys and
# values projected from the text width (2048) to C.
@pytest.mark.parametrize(
    ("preset", "width", "heads"), [("infinity-125m", 768, 16), ("infinity-2b", 2048, 16), ("infinity-8b", 3584, 16)]
)
def test_text_pool_has_the_official_shapes_at_every_width(preset: str, width: int, heads: int) -> None:
    with torch.device("meta"):
        model = NextScaleTransformer(TRANSFORMER_PRESETS[preset])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("text_proj_for_sos.")}
    assert shapes == {
        "text_proj_for_sos.ca.mat_q": (1, heads, width // heads),
        "text_proj_for_sos.ca.mat_kv.weight": (2 * width, 2048),
        "text_proj_for_sos.ca.v_bias": (width,),
        "text_proj_for_sos.ca.zero_k_bias": (width,),
        "text_proj_for_sos.ca.proj.weight": (width, width),
        "text_proj_for_sos.ca.proj.bias": (width,),
    }


def test_text_pool_at_a_narrow_width_matches_a_reference_pooling() -> None:
    """C != D: heads of width C / H over keys/values projected to C (written out by hand here)."""
    from varestorer.transformer.blocks import AttentivePoolAttention

    torch.manual_seed(0)
    pool = AttentivePoolAttention(text_dim=32, out_dim=24, head_dim=8)  # 4 heads of width 6
    text = torch.randn(2, 5, 32)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    k, v = (text @ pool.mat_kv.weight.T).split(24, dim=-1)
    v = v + pool.v_bias
    outs = []
    for b in range(2):
        valid = int(mask[b].sum())
        heads = []
        for h in range(4):
            q = pool.mat_q[0, h]
            kh, vh = k[b, :valid, 6 * h : 6 * h + 6], v[b, :valid, 6 * h : 6 * h + 6]
            heads.append(((kh @ q) / 6**0.5).softmax(0) @ vh)
        outs.append(torch.cat(heads))
    expected = pool.proj(torch.stack(outs))
    torch.testing.assert_close(pool(text, mask), expected, rtol=1e-5, atol=1e-6)
