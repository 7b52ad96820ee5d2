"""The next-scale sampler: cached sampling reproduces teacher forcing; CFG, top-p, seeding."""

from __future__ import annotations

import pytest
import torch

from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.transformer.config import TRANSFORMER_PRESETS
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.sampler import sample_scales, sample_scales_detailed, sample_top_p
from varestorer.transformer.text import TextCondition

SCHEDULE = ((1, 1), (2, 2), (3, 3), (4, 4))


@pytest.fixture
def parts():
    transformer = NextScaleTransformer(TRANSFORMER_PRESETS["tiny"]).eval()
    with torch.no_grad():  # move away from the near-uniform initial head so that samples vary
        for parameter in transformer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    tokenizer = MultiScaleTokenizer.from_preset("tiny").eval()
    g = torch.Generator().manual_seed(3)
    text = TextCondition(torch.randn(2, 4, 32, generator=g), torch.tensor([4, 2]))
    return transformer, tokenizer.quantizer, text


def test_cached_sampling_gives_exactly_the_teacher_forced_logits(parts) -> None:
    transformer, quantizer, text = parts
    out = sample_scales_detailed(transformer, quantizer, SCHEDULE, text, generator=torch.Generator().manual_seed(0))
    assert [tuple(x.shape) for x in out.labels] == [(2, 1, 8), (2, 4, 8), (2, 9, 8), (2, 16, 8)]
    assert out.cache.length == 30 and out.f_hat.shape == (2, 8, 4, 4)
    inputs = quantizer.teacher_forcing_inputs(out.labels, SCHEDULE, SCHEDULE[-1])
    with torch.no_grad():
        forced = transformer(inputs, SCHEDULE, text)
    torch.testing.assert_close(torch.cat(out.logits, 1), forced, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.f_hat, quantizer.labels_to_f_hat(out.labels, SCHEDULE, SCHEDULE[-1]))


def test_cfg_mixes_conditional_and_unconditional_logits(parts) -> None:
    transformer, quantizer, text = parts
    out = sample_scales_detailed(
        transformer, quantizer, SCHEDULE, text, cfg_scale=3.0, generator=torch.Generator().manual_seed(0)
    )
    inputs = quantizer.teacher_forcing_inputs(out.labels, SCHEDULE, SCHEDULE[-1])
    with torch.no_grad():
        cond = transformer(inputs, SCHEDULE, text)
        uncond = transformer(inputs, SCHEDULE, text, drop=torch.ones(2, dtype=torch.bool))
    torch.testing.assert_close(torch.cat(out.logits, 1), 3.0 * cond - 2.0 * uncond, atol=1e-4, rtol=0)


def test_sampling_is_seeded_and_unconditional_needs_a_batch_size(parts) -> None:
    transformer, quantizer, _ = parts
    a = sample_scales(transformer, quantizer, SCHEDULE, batch_size=3, generator=torch.Generator().manual_seed(5))
    b = sample_scales(transformer, quantizer, SCHEDULE, batch_size=3, generator=torch.Generator().manual_seed(5))
    c = sample_scales(transformer, quantizer, SCHEDULE, batch_size=3, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    with pytest.raises(ValueError, match="batch_size"):
        sample_scales(transformer, quantizer, SCHEDULE)
    with pytest.raises(ValueError, match="temperature"):
        sample_scales(transformer, quantizer, SCHEDULE, batch_size=1, temperature=0.0)
    # sample_scales is the labels of the one loop, whose keywords it takes (and no others)
    detailed = sample_scales_detailed(
        transformer, quantizer, SCHEDULE, batch_size=3, generator=torch.Generator().manual_seed(5)
    )
    assert all(torch.equal(x, y) for x, y in zip(a, detailed.labels))
    with pytest.raises(TypeError, match="top_k"):
        sample_scales(transformer, quantizer, SCHEDULE, batch_size=1, top_k=5)


def test_top_p_per_bit() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 4.0], [0.0, 0.0], [2.0, 0.0]]).expand(4000, 3, 2)  # p(1) = .98, .5, .12
    bits = sample_top_p(logits, generator=g).float().mean(0)
    torch.testing.assert_close(bits, torch.tensor([0.982, 0.5, 0.119]), atol=0.025, rtol=0)
    nucleus = sample_top_p(logits, top_p=0.97, generator=g).float().mean(0)
    assert nucleus[0] == 1.0 and abs(nucleus[1] - 0.5) < 0.05  # confident bit fixed, coin flip kept
    greedy = sample_top_p(logits, top_p=1e-6, generator=g).float().mean(0)
    assert greedy.tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="top_p"):
        sample_top_p(logits, top_p=0.0)


def test_a_codebook_transformer_samples_with_the_codebook_quantizer() -> None:
    from varestorer.tokenizer.codebook import CodebookQuantizer
    from varestorer.transformer.config import transformer_preset

    quantizer = CodebookQuantizer(8, codebook_size=16).eval()
    transformer = NextScaleTransformer(transformer_preset("tiny", codebook_size=16)).eval()
    out = sample_scales_detailed(transformer, quantizer, SCHEDULE, batch_size=2, generator=torch.Generator())
    assert [tuple(x.shape) for x in out.labels] == [(2, 1), (2, 4), (2, 9), (2, 16)]
    inputs = quantizer.teacher_forcing_inputs(out.labels, SCHEDULE, SCHEDULE[-1])
    with torch.no_grad():
        forced = transformer(inputs, SCHEDULE, None)
    assert forced.shape == (2, 30, 16)
    torch.testing.assert_close(torch.cat(out.logits, 1), forced, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="codebook_size"):
        sample_scales(NextScaleTransformer(TRANSFORMER_PRESETS["tiny"]), quantizer, SCHEDULE, batch_size=1)


def test_multinomial_draw_is_infinitys_draw_and_keeps_the_distribution() -> None:
    """``draw="multinomial"`` is ``torch.multinomial`` over the two outcomes of every bit (Infinity's
    sampler), so a seed gives Infinity's bits; both draws sample the same distribution."""
    logits = torch.randn(3, 50, 4, 2, generator=torch.Generator().manual_seed(1))
    ours = sample_top_p(logits, generator=torch.Generator().manual_seed(7), draw="multinomial")
    probs = logits.softmax(-1).reshape(-1, 2)
    reference = torch.multinomial(probs, 1, replacement=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(ours, reference.view(3, 50, 4))
    big = torch.tensor([[0.3, -0.4]]).expand(40000, 2)
    p1 = float(torch.sigmoid(torch.tensor(-0.7)))
    for draw in ("inverse_cdf", "multinomial"):
        rate = sample_top_p(big, generator=torch.Generator().manual_seed(3), draw=draw).float().mean()
        assert abs(float(rate) - p1) < 0.01
    with pytest.raises(ValueError, match="draw must be"):
        sample_top_p(logits, draw="gumbel")  # type: ignore[arg-type]
