"""NextScaleTransformer: masks, KV-cache consistency, attention paths, RoPE, save/load, training."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from varestorer.nn.attention import KVCache, attention
from varestorer.transformer.config import TRANSFORMER_PRESETS, TransformerConfig, transformer_preset
from varestorer.transformer.model import NextScaleTransformer, block_causal_mask, scale_levels
from varestorer.transformer.rope import apply_rope, rope_extent, rope_table, scale_positions
from varestorer.transformer.text import TextCondition

SCHEDULE = ((1, 1), (2, 2), (3, 3), (4, 4))  # L = 30
L = 30


def tiny(perturb: float = 0.1, **overrides) -> NextScaleTransformer:
    """A tiny model; ``perturb`` adds noise to every weight so that no branch starts near zero."""
    # "last": positions on the schedule's own last grid (independent of the tokenizer's templates).
    config = dataclasses.replace(TRANSFORMER_PRESETS["tiny"], rope_extent="last", **overrides)
    model = NextScaleTransformer(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * perturb)
    return model


def text_condition(batch: int, length: int = 5, dim: int = 32, seed: int = 1) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, dim, generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    return TextCondition(tokens, lengths)


def test_block_causal_mask_lets_a_token_see_its_scale_and_earlier_ones() -> None:
    mask = block_causal_mask(((1, 1), (2, 2), (1, 2)))
    levels = [0, 1, 1, 1, 1, 2, 2]
    expected = torch.tensor([[lq >= lk for lk in levels] for lq in levels])
    assert torch.equal(mask, expected)
    assert scale_levels(SCHEDULE).tolist() == [0] + [1] * 4 + [2] * 9 + [3] * 16


def test_causal_forward_ignores_later_scales_and_full_forward_does_not() -> None:
    model = tiny()
    x = torch.randn(2, L - 1, 8)
    x2 = x.clone()
    x2[:, 13:] += 1.0  # change the inputs of the last scale (positions 14..29)
    with torch.no_grad():
        causal, causal2 = model(x, SCHEDULE, None), model(x2, SCHEDULE, None)
        full, full2 = model(x, SCHEDULE, None, mask="full"), model(x2, SCHEDULE, None, mask="full")
    assert causal.shape == (2, L, 8, 2) and causal.dtype == torch.float32
    assert torch.allclose(causal[:, :14], causal2[:, :14], atol=1e-6)
    assert not torch.allclose(causal[:, 14:], causal2[:, 14:], atol=1e-4)
    assert not torch.allclose(full[:, :14], full2[:, :14], atol=1e-4)


def test_kv_cached_scale_steps_equal_the_teacher_forced_pass() -> None:
    model = tiny()
    text = text_condition(3)
    x = torch.randn(3, L - 1, 8)
    with torch.no_grad():
        reference = model(x, SCHEDULE, text)
        cond = model.encode_condition(text)
        cache, offset, rows = None, 0, []
        for k, (h, w) in enumerate(SCHEDULE):
            inputs = None if k == 0 else x[:, offset - 1 : offset - 1 + h * w]
            logits, cache = model.forward_scale(inputs, SCHEDULE, k, cond, cache)
            rows.append(logits)
            offset += h * w
            assert isinstance(cache, KVCache) and cache.length == offset
    torch.testing.assert_close(torch.cat(rows, 1), reference, atol=1e-4, rtol=0)


def test_forward_scale_rejects_a_cache_of_the_wrong_length() -> None:
    model = tiny()
    cond = model.encode_condition(None, 1)
    with pytest.raises(ValueError, match="cache holds 0 tokens"):
        model.forward_scale(torch.zeros(1, 4, 8), SCHEDULE, 1, cond, None)


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_and_reference_attention_agree(masked: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 16, generator=g) for _ in range(3))
    mask = block_causal_mask(((1, 1), (1, 2), (2, 2))) if masked else None
    fast = attention(q, k, v, mask, scale=0.7)
    slow = attention(q, k, v, mask, scale=0.7, implementation="reference")
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="boolean"):
        attention(q, k, v, torch.zeros(7, 7))


def test_rope_positions_are_scale_aligned_on_the_common_grid() -> None:
    positions = scale_positions(((1, 1), (2, 2), (4, 4)), (8, 8))
    assert positions[0].tolist() == [0, 0]
    assert positions[1:5].tolist() == [[0, 0], [0, 4], [4, 0], [4, 4]]
    assert positions[5:9, 1].tolist() == [0, 2, 4, 6] and positions[5:21:4, 0].tolist() == [0, 2, 4, 6]
    # A rotation preserves norms; the first half of the channels follows rows, the second columns.
    table = rope_table(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]]), head_dim=8)
    x = torch.randn(1, 1, 3, 8)
    rotated = apply_rope(x, table)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rotated[..., 0, :], x[..., 0, :])
    torch.testing.assert_close(rotated[..., 1, 4:], x[..., 1, 4:])  # row move leaves column channels
    torch.testing.assert_close(rotated[..., 2, :4], x[..., 2, :4])  # column move leaves row channels
    assert not torch.allclose(rotated[..., 1, :4], x[..., 1, :4])


def test_infinity_rope_spreads_every_scale_over_the_1m_template_grid() -> None:
    from varestorer.tokenizer.scales import infinity_schedule

    square = infinity_schedule(256, 256)  # 1, 2, 4, 6, 8, 12, 16
    assert rope_extent(square) == (64, 64)
    positions = scale_positions(square, rope_extent(square))
    assert positions.shape == (521, 2)
    last = positions[-256:]
    assert sorted(set(last[:, 0].tolist())) == list(range(0, 64, 4))  # research §2.5: 0, 4, ..., 60
    assert positions[1:5].tolist() == [[0, 0], [0, 32], [32, 0], [32, 32]]
    tall = infinity_schedule(512, 256)  # h/w = 2: the 2.0 template, final 1M grid (90, 45)
    assert rope_extent(tall) == (90, 45)
    assert rope_extent(((1, 1), (2, 2)), "last") == (2, 2)
    model = NextScaleTransformer(TRANSFORMER_PRESETS["tiny"])
    assert model.rope_table(square).shape == (2, 521, 8)


def test_caption_dropout_uses_the_unconditional_tokens() -> None:
    model = tiny()
    text = text_condition(2)
    x = torch.randn(2, L - 1, 8)
    with torch.no_grad():
        dropped = model(x, SCHEDULE, text, drop=torch.tensor([True, False]))
        plain = model(x, SCHEDULE, text)
        other = model(x, SCHEDULE, TextCondition(torch.randn(2, 5, 32), text.lengths), drop=torch.tensor([True, True]))
    assert torch.allclose(dropped[1], plain[1], atol=1e-6)
    assert not torch.allclose(dropped[0], plain[0], atol=1e-4)
    assert torch.allclose(dropped[0], other[0], atol=1e-6)  # the caption's content no longer matters


def test_bad_inputs_raise_one_line_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="inputs must be"):
        model(torch.zeros(1, L, 8), SCHEDULE, None)
    with pytest.raises(ValueError, match="start with the 1x1"):
        model(torch.zeros(1, 3, 8), ((2, 2),), None)
    with pytest.raises(ValueError, match="width"):
        model(torch.zeros(1, L - 1, 8), SCHEDULE, text_condition(1, dim=16))
    with pytest.raises(ValueError, match="mask must be"):
        model(torch.zeros(1, L - 1, 8), SCHEDULE, None, mask="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown transformer preset"):
        transformer_preset("huge")
    with pytest.raises(ValueError, match="heads"):
        TransformerConfig(width=60, num_heads=4)


def test_save_and_load_round_trip(tmp_path) -> None:
    model = tiny(block_chunks=2)
    assert any(k.startswith("block_chunks.1.module.0.sa.mat_qkv") for k in model.state_dict())
    model.save_pretrained(tmp_path / "t")
    loaded = NextScaleTransformer.from_pretrained(tmp_path / "t")
    assert loaded.config == model.config
    x = torch.randn(1, L - 1, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, SCHEDULE, None), model(x, SCHEDULE, None))


def test_attention_projection_weights_are_read_at_call_time() -> None:
    """A parametrization on ``.weight`` (how LoRA is injected) must change the output."""
    from torch.nn.utils import parametrize

    class AddOne(torch.nn.Module):
        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight + 0.05

    model = tiny()
    x = torch.randn(1, L - 1, 8)
    with torch.no_grad():
        before = model(x, SCHEDULE, text_condition(1), mask="full")
        block = model.block_list()[0]
        for module in (block.sa.mat_qkv, block.ca.mat_kv):
            parametrize.register_parametrization(module, "weight", AddOne())
        after = model(x, SCHEDULE, text_condition(1), mask="full")
    assert not torch.allclose(before, after, atol=1e-5)


def test_a_tiny_model_learns_a_tiny_synthetic_set() -> None:
    g = torch.Generator().manual_seed(0)
    model = tiny(perturb=0.0).train()
    inputs = torch.randn(4, L - 1, 8, generator=g)
    labels = torch.randint(0, 2, (4, L, 8), generator=g)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        logits = model(inputs, SCHEDULE, None)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(0.693, abs=0.02)  # the head starts near 50/50 per bit
    assert losses[-1] < 0.8 * losses[0]


def _explicit_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cos, sin = table[0], table[1]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def test_fused_self_attention_front_end_matches_the_explicit_formula() -> None:
    """q, k normalised together, one complex RoPE multiply: same values as normalize, exp(scale), rotate."""
    import torch.nn.functional as F

    from varestorer.transformer.blocks import SelfAttention

    g = torch.Generator().manual_seed(0)
    sa = SelfAttention(64, 4)
    with torch.no_grad():
        for p in sa.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        sa.scale_mul_1H11.copy_(torch.tensor([0.5, 1.0, 2.0, 5.0]).view(1, 4, 1, 1))  # the last one clamps
    schedule = ((1, 1), (2, 2), (4, 4))
    table = rope_table(scale_positions(schedule, (8, 8)), head_dim=16)
    x = torch.randn(2, 21, 64, generator=g)
    table_x = torch.randn(2, 1, 21, 16, generator=g)
    torch.testing.assert_close(apply_rope(table_x, table), _explicit_rope(table_x, table), atol=1e-6, rtol=1e-6)
    out, (k, v) = sa(x, table, None)
    bias = torch.cat((sa.q_bias, sa.zero_k_bias, sa.v_bias))
    q_ref, k_ref, v_ref = F.linear(x, sa.mat_qkv.weight, bias).view(2, 21, 3, 4, 16).permute(2, 0, 3, 1, 4)
    q_ref = F.normalize(q_ref, dim=-1) * sa.scale_mul_1H11.clamp(max=math.log(100.0)).exp()
    q_ref, k_ref = _explicit_rope(q_ref, table), _explicit_rope(F.normalize(k_ref, dim=-1), table)
    ref = attention(q_ref, k_ref, v_ref, None, scale=1.0, implementation="reference")
    torch.testing.assert_close(k, k_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(v, v_ref, atol=0, rtol=0)
    torch.testing.assert_close(out, sa.proj(ref.transpose(1, 2).reshape(2, 21, 64)), atol=1e-5, rtol=1e-5)
