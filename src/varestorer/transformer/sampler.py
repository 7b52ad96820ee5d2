"""The next-scale sampling loop: one scale at a time, an explicit KV cache, CFG on logits.

For each scale k of the schedule (Infinity `autoregressive_infer_cfg`, docs/sources.md):
1. run the transformer on scale k's inputs (the start token for k = 0) against the cache of
   scales < k, getting logits and the longer cache;
2. classifier-free guidance: ``cfg * cond + (1 - cfg) * uncond`` on the logits (the batch holds the
   conditional half, then the unconditional half);
3. divide by the temperature and sample every bit (or codebook index) with top-p;
4. labels -> codes -> add to the accumulated f_hat; interpolate f_hat to scale k + 1: its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from varestorer.nn.attention import KVCache
from varestorer.tokenizer.quantizer import MultiScaleQuantizer
from varestorer.tokenizer.scales import Schedule
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition


@dataclass(frozen=True)
class SampledScales:
    """What one run of the loop produced.

    Attributes:
        labels: per scale, (B, h*w, d) int64 bits (codebook: (B, h*w) indices).
        logits: per scale, the guided logits before temperature, (B, h*w, d, 2) float32 ((B, h*w, V)).
        f_hat: (B, d, H, W) accumulated codes on the last grid (decode it for the image).
        cache: the KV cache after the last scale (B or 2B rows with CFG).
    """

    labels: list[Tensor]
    logits: list[Tensor]
    f_hat: Tensor
    cache: KVCache


Draw = Literal["inverse_cdf", "multinomial"]
"""How one categorical sample is drawn: one uniform number against the CDF (ours), or
``torch.multinomial`` over the (two) outcomes, as Infinity does; same distribution, other images per seed."""


def sample_top_p(
    logits: Tensor, *, top_p: float = 1.0, generator: torch.Generator | None = None, draw: Draw = "inverse_cdf"
) -> Tensor:
    """Sample an index along the last axis from softmax(logits), keeping the top-p nucleus.

    With two classes (one bit) and ``top_p`` = 0.97, a bit whose likelier value has probability
    >= 0.97 is taken deterministically.

    Args:
        logits: (..., V) float logits.
        top_p: in (0, 1]; the smallest set of classes whose probability reaches it is kept.
        draw: ``inverse_cdf`` or ``multinomial`` (Infinity's draw, for its seeded images).

    Returns:
        (...) int64 indices.
    """
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    probs = logits.float().softmax(-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the likelier classes
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    if draw == "multinomial":
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1, replacement=True, generator=generator).view(probs.shape[:-1])
    if draw != "inverse_cdf":
        raise ValueError(f"draw must be 'inverse_cdf' or 'multinomial', got {draw!r}")
    cdf = probs.cumsum(-1)
    u = torch.rand(*probs.shape[:-1], 1, generator=generator, device=probs.device) * cdf[..., -1:]
    return (cdf <= u).sum(-1).clamp_(max=probs.shape[-1] - 1)


def check_compatible(transformer: NextScaleTransformer, quantizer: MultiScaleQuantizer) -> None:
    """Raise ``ValueError`` unless the transformer's inputs and head fit the quantizer's codes and labels."""
    config = transformer.config
    if quantizer.token_dim != config.token_dim:
        raise ValueError(f"quantizer has d={quantizer.token_dim}, transformer d={config.token_dim}")
    expected = None if quantizer.bitwise else quantizer.num_classes
    if config.codebook_size != expected:
        kind = "bitwise" if quantizer.bitwise else f"a {quantizer.num_classes}-entry codebook"
        raise ValueError(f"quantizer is {kind}, transformer codebook_size is {config.codebook_size}")


@torch.no_grad()
def sample_scales_detailed(
    transformer: NextScaleTransformer,
    quantizer: MultiScaleQuantizer,
    schedule: Schedule,
    text: TextCondition | None = None,
    *,
    batch_size: int | None = None,
    cfg_scale: float = 1.0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    greedy: bool = False,
    control: Sequence[Tensor] | None = None,
    draw: Draw = "inverse_cdf",
) -> SampledScales:
    """Generate every scale of ``schedule`` autoregressively, coarse to fine.

    Args:
        transformer: the next-scale model (put it in ``eval()`` mode).
        quantizer: turns sampled labels into codes and the next scale's inputs.
        schedule: (h, w) grids starting at (1, 1); the last one is the latent grid.
        text: encoded captions, or ``None`` for unconditional generation (then ``batch_size``).
        cfg_scale: guidance weight on logits (1 = none; Infinity-2B uses 3-4). Ignored without text.
        temperature: > 0, divides the guided logits (Infinity-2B: 0.5).
        top_p: nucleus per bit (Infinity: 0.97).
        generator: seeds the sampling.
        greedy: take the likelier label of every bit (argmax; temperature and top-p are then unused).
        control: per-block additions (B, L, C) over the whole sequence (a ControlNet-style branch,
            ``models/lq_conditioned.py``); each scale gets its slice, repeated for the unconditional half with CFG.
        draw: ``multinomial`` draws like Infinity (see :data:`Draw`).

    Returns:
        the labels, guided logits, f_hat and KV cache of the run (:class:`SampledScales`).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if text is None and batch_size is None:
        raise ValueError("give text or batch_size")
    check_compatible(transformer, quantizer)
    B = text.batch_size if text is not None else int(batch_size)  # type: ignore[arg-type]
    device = transformer.pos_start.device
    guided = text is not None and cfg_scale != 1.0  # without text both halves would be identical
    if guided:
        assert text is not None
        both = TextCondition.cat([text, text]).to(device)
        drop = torch.arange(2 * B, device=device) >= B  # second half: the unconditional tokens
        cond = transformer.encode_condition(both, drop=drop)
    else:
        cond = transformer.encode_condition(text.to(device) if text is not None else None, B)

    labels, logits_per_scale = [], []
    cache: KVCache | None = None
    f_hat: Tensor | None = None
    inputs_Bld: Tensor | None = None
    offset = 0
    for k, hw in enumerate(schedule):
        # 1. one scale through the transformer, attending to the cached earlier scales
        step_inputs = torch.cat([inputs_Bld, inputs_Bld]) if guided and inputs_Bld is not None else inputs_Bld
        step_control = None
        if control is not None:
            step_control = [c[:, offset : offset + hw[0] * hw[1]] for c in control]
            step_control = [torch.cat([c, c]) for c in step_control] if guided else step_control
        offset += hw[0] * hw[1]
        logits, cache = transformer.forward_scale(step_inputs, schedule, k, cond, cache, control=step_control)
        # 2. classifier-free guidance on the logits
        if guided:
            logits = cfg_scale * logits[:B] + (1.0 - cfg_scale) * logits[B:]
        logits_per_scale.append(logits)
        # 3. temperature and top-p, independently for every bit
        if greedy:
            labels_k = logits.argmax(-1)
        else:
            labels_k = sample_top_p(logits / temperature, top_p=top_p, generator=generator, draw=draw)
        labels.append(labels_k)
        # 4. accumulate the codes and build the next scale's inputs
        codes = quantizer.labels_to_codes(labels_k, hw)
        if f_hat is None:
            f_hat = codes.new_zeros(B, codes.shape[1], *schedule[-1])
        f_hat, inputs_Bld = quantizer.step(f_hat, codes, schedule, k)
    assert f_hat is not None and cache is not None
    return SampledScales(labels=labels, logits=logits_per_scale, f_hat=f_hat, cache=cache)


def sample_scales(
    transformer: NextScaleTransformer,
    quantizer: MultiScaleQuantizer,
    schedule: Schedule,
    text: TextCondition | None = None,
    **options: Any,
) -> list[Tensor]:
    """Sample the token maps of every scale, coarse to fine: the labels of :func:`sample_scales_detailed`,
    which documents the arguments (``options`` are its keyword arguments, e.g. ``batch_size``, ``cfg_scale``).

    Returns:
        per scale (B, h*w, d) int64 bits; ``tokenizer.labels_to_image(labels, schedule)`` decodes them.
    """
    return sample_scales_detailed(transformer, quantizer, schedule, text, **options).labels
