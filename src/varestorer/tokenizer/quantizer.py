"""Multi-scale residual quantizers: latent f -> per-scale token maps -> f_hat, and teacher-forcing inputs.

``MultiScaleQuantizer`` is the interface the decoder path, the transformer and the token KL use; they never
ask which quantizer it is beyond ``bitwise`` / ``num_classes``. ``BitwiseQuantizer`` is Infinity's BSQ
(Infinity `infinity/models/bsq_vae/multiscale_bsq.py`, docs/sources.md):

    rest = f, f_hat = 0
    for each scale (h, w):
        r = area_down(rest, h x w)                  # skipped at full size
        q = sign(l2_normalize(r)) / sqrt(d)         # straight-through to the normalised r
        bits = q > 0                                # the labels of this scale
        u = up(q) to the full grid                  # bilinear, align_corners=False
        rest -= u (detached); f_hat += u

Upsampling: Infinity calls ``trilinear`` on (B, d, 1, h, w); with one frame that is exactly bilinear in
(h, w) with ``align_corners=False`` (the ``F.interpolate`` default), which is what this module uses.
The VAR-style ``CodebookQuantizer`` (``codebook.py``: nearest of V codes, bicubic up, phi convs) implements
the same interface: its labels are (B, h*w) indices and ``add_scale`` uses ``scale_index``/``num_scales``
to pick a phi, so callers should always pass them.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varestorer.tokenizer.scales import Schedule


@dataclass
class MultiScaleTokens:
    """The result of quantizing one latent over a schedule."""

    f_hat: Tensor
    """(B, d, H, W) accumulated codes; straight-through, so gradients reach the quantized f."""
    labels: list[Tensor]
    """One per scale: (B, h*w, d) int64 bits in {0, 1} (codebook: (B, h*w) indices), row-major over (h, w)."""
    inputs: Tensor
    """(B, L - h1*w1, d) teacher-forcing inputs of scales 2..K (Infinity's ``x_BLC_wo_prefix``)."""
    residual_norms: list[float]
    """Per scale: mean over tokens of the L2 norm of f - f_hat after that scale."""
    commitment_loss: Tensor | None = None
    """Scalar mean((f - stop_grad(f_hat))^2): pulls the encoder toward its codes (VAR weights it 0.25)."""
    codebook_loss: Tensor | None = None
    """Scalar mean((stop_grad(f) - f_hat)^2) that trains learnable codes; zero for the bitwise quantizer."""
    residuals: list[Tensor] | None = None
    """Bitwise, with ``with_residuals``: per scale the normalised residual (B, h*w, d) whose signs are the bits
    (unit L2 norm per token; a value near 0 is a bit the latent barely decides). None otherwise."""


def resize_latent(x_BdHW: Tensor, hw: tuple[int, int], mode: str) -> Tensor:
    """Resize (B, d, H, W) to ``hw`` (area, or bilinear/bicubic with align_corners=False); same size: unchanged."""
    if tuple(x_BdHW.shape[-2:]) == tuple(hw):
        return x_BdHW
    if mode == "area":
        return F.interpolate(x_BdHW, size=hw, mode="area")
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x_BdHW, size=hw, mode=mode, align_corners=False)
    raise ValueError(f"unknown interpolation {mode!r}")


def check_schedule(schedule: Schedule, grid_hw: tuple[int, int]) -> None:
    """Raise ``ValueError`` unless every scale of ``schedule`` fits the latent grid."""
    if not schedule:
        raise ValueError("the scale schedule is empty")
    for h, w in schedule:
        if not (1 <= h <= grid_hw[0] and 1 <= w <= grid_hw[1]):
            raise ValueError(f"scale {h}x{w} does not fit the latent grid {grid_hw[0]}x{grid_hw[1]}")


class MultiScaleQuantizer(nn.Module, abc.ABC):
    """Interface of a multi-scale residual quantizer over a (B, d, H, W) latent."""

    token_dim: int
    """d: channels of f and of the transformer's inputs."""
    bitwise: bool
    """True: labels are (B, l, d) bits and logits (B, l, d, 2). False: (B, l) indices, logits (B, l, V)."""
    num_classes: int
    """2 for bitwise; V for a codebook."""
    input_interpolation: str
    """Mode used by :meth:`next_input`."""
    upsample_mode: str = "bilinear"
    """Mode used to bring a scale's codes to the full grid."""

    @abc.abstractmethod
    def quantize(
        self,
        f_BdHW: Tensor,
        schedule: Schedule,
        *,
        flip_probability: float = 0.0,
        generator: torch.Generator | None = None,
        with_norms: bool = True,
    ) -> MultiScaleTokens:
        """Quantize ``f`` over ``schedule`` (optionally with bitwise self-correction flips).

        ``with_norms=False`` leaves ``residual_norms`` empty: reading them back is a host sync, which
        an inference step on a GPU must not pay.
        """

    def check_quantize_inputs(self, f_BdHW: Tensor, schedule: Schedule, flip_probability: float) -> tuple[int, int]:
        """The latent grid (H, W) of ``f``; one-line ``ValueError`` unless ``f`` is (B, d, H, W), the flip
        probability is in [0, 1] and every scale of ``schedule`` fits the grid (what every ``quantize`` checks)."""
        if f_BdHW.ndim != 4 or f_BdHW.shape[1] != self.token_dim:
            raise ValueError(f"expected a (B, {self.token_dim}, H, W) latent, got {tuple(f_BdHW.shape)}")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
        grid_hw = (f_BdHW.shape[2], f_BdHW.shape[3])
        check_schedule(schedule, grid_hw)
        return grid_hw

    @abc.abstractmethod
    def labels_to_codes(self, labels_Bl: Tensor, hw: tuple[int, int]) -> Tensor:
        """One scale's labels -> its code map (B, d, h, w)."""

    @abc.abstractmethod
    def code_table(self) -> Tensor:
        """The values a label selects: bitwise (2,) code of bit 0 and bit 1; codebook (V, d) embeddings.

        A soft (probability-weighted) code is ``probs @ code_table()`` (per bit for the bitwise quantizer).
        """

    def scale_codes(self, codes_Bdhw: Tensor, grid_hw: tuple[int, int]) -> Tensor:
        """A scale's code map as it enters f_hat on a ``grid_hw`` latent; identity unless a subclass has gains."""
        return codes_Bdhw

    def add_scale(self, f_hat_BdHW: Tensor, codes_Bdhw: Tensor, *, scale_index: int = 0, num_scales: int = 1) -> Tensor:
        """f_hat + up(codes) on the full grid (a codebook quantizer applies its phi for ``scale_index``)."""
        grid_hw = (f_hat_BdHW.shape[-2], f_hat_BdHW.shape[-1])
        return f_hat_BdHW + resize_latent(self.scale_codes(codes_Bdhw, grid_hw), grid_hw, self.upsample_mode)

    def next_input(self, f_hat_BdHW: Tensor, hw_next: tuple[int, int]) -> Tensor:
        """Accumulated f_hat resized to the next scale, flattened row-major: (B, h*w, d)."""
        return resize_latent(f_hat_BdHW, hw_next, self.input_interpolation).flatten(2).transpose(1, 2)

    def step(
        self, f_hat_BdHW: Tensor, codes_Bdhw: Tensor, schedule: Schedule, k: int, *, with_input: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """One step of the per-scale loop (every loop over scales goes through it): f_hat + up(codes of scale
        ``k``), and the inputs (B, h*w, d) of scale ``k + 1`` (None after the last scale or without ``with_input``)."""
        f_hat_BdHW = self.add_scale(f_hat_BdHW, codes_Bdhw, scale_index=k, num_scales=len(schedule))
        if not with_input or k + 1 >= len(schedule):
            return f_hat_BdHW, None
        return f_hat_BdHW, self.next_input(f_hat_BdHW, schedule[k + 1])

    def accumulate(
        self, codes: list[Tensor], schedule: Schedule, grid_hw: tuple[int, int], *, with_inputs: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Code maps (B, d, h_k, w_k) of the first ``len(codes)`` scales -> (f_hat (B, d, *grid_hw), the
        teacher-forcing inputs (B, L - h1*w1, d) of the scales after the first, or None without ``with_inputs``)."""
        if len(codes) > len(schedule) or not codes:
            raise ValueError(f"got codes for {len(codes)} scales, schedule has {len(schedule)}")
        check_schedule(schedule, grid_hw)
        f_hat = codes[0].new_zeros(codes[0].shape[0], codes[0].shape[1], *grid_hw)
        rows: list[Tensor] = []
        for k, codes_Bdhw in enumerate(codes):
            f_hat, inputs = self.step(f_hat, codes_Bdhw, schedule, k, with_input=with_inputs)
            if inputs is not None:
                rows.append(inputs)
        if not with_inputs:
            return f_hat, None
        return f_hat, torch.cat(rows, dim=1) if rows else f_hat.new_zeros(f_hat.shape[0], 0, f_hat.shape[1])

    def labels_to_f_hat(self, labels: list[Tensor], schedule: Schedule, grid_hw: tuple[int, int]) -> Tensor:
        """Labels of the first ``len(labels)`` scales -> f_hat (B, d, *grid_hw)."""
        if len(labels) > len(schedule) or not labels:
            raise ValueError(f"got labels for {len(labels)} scales, schedule has {len(schedule)}")
        codes = [self.labels_to_codes(labels_Bl, hw) for labels_Bl, hw in zip(labels, schedule)]
        return self.accumulate(codes, schedule, grid_hw, with_inputs=False)[0]

    def teacher_forcing_inputs(self, labels: list[Tensor], schedule: Schedule, grid_hw: tuple[int, int]) -> Tensor:
        """(B, L - h1*w1, d) inputs of scales 2..K rebuilt from labels (no flips)."""
        codes = [self.labels_to_codes(labels_Bl, hw) for labels_Bl, hw in zip(labels, schedule)]
        inputs = self.accumulate(codes, schedule, grid_hw)[1]
        assert inputs is not None
        return inputs


def infinity_bit_mask(token_dim: int) -> Tensor:
    """int64 [2^(d-1), ..., 2, 1]; 2^63 wraps to -2^63 as int64 arithmetic does in Infinity."""
    return torch.tensor([(1 << i) if i < 63 else -(1 << 63) for i in range(token_dim - 1, -1, -1)], dtype=torch.int64)


class _BitMask(nn.Module):
    """Holds Infinity's ``lfq.mask`` buffer (2^(d-1) ... 2^0, int64) so official checkpoints load strictly.

    Unused by the math (labels are bit vectors); for d = 64 the top entry wraps around like Infinity's.
    """

    def __init__(self, token_dim: int) -> None:
        super().__init__()
        self.register_buffer("mask", infinity_bit_mask(token_dim))


class BitwiseQuantizer(MultiScaleQuantizer):
    """Infinity's multi-scale BSQ: every token is d bits; its code is sign(normalised r) / sqrt(d).

    Has no parameters. With ``infinity_buffers`` it carries the ``lfq.mask`` buffer of official weights.
    """

    bitwise = True
    num_classes = 2
    upsample_mode = "bilinear"

    def __init__(
        self,
        token_dim: int,
        *,
        input_interpolation: Literal["bilinear", "area"] = "bilinear",
        infinity_buffers: bool = False,
    ) -> None:
        super().__init__()
        if token_dim < 1:
            raise ValueError(f"token_dim must be positive, got {token_dim}")
        self.token_dim = token_dim
        self.input_interpolation = input_interpolation
        if infinity_buffers:
            self.lfq = _BitMask(token_dim)

    def bit_values(self) -> tuple[float, float]:
        """Code value of bit 0 and of bit 1: (-1/sqrt(d), +1/sqrt(d))."""
        scale = 1.0 / math.sqrt(self.token_dim)
        return -scale, scale

    def code_table(self) -> Tensor:
        """(2,) float32: the code value of bit 0 and of bit 1."""
        return torch.tensor(self.bit_values())

    def labels_to_codes(self, labels_Bl: Tensor, hw: tuple[int, int]) -> Tensor:
        """Bits (B, h*w, d) in {0, 1} -> codes (B, d, h, w) in {-1/sqrt(d), +1/sqrt(d)}."""
        B, l, d = labels_Bl.shape
        if l != hw[0] * hw[1] or d != self.token_dim:
            raise ValueError(f"labels {tuple(labels_Bl.shape)} do not fit scale {hw} with d={self.token_dim}")
        codes_Bld = (labels_Bl.float() * 2 - 1) / math.sqrt(d)
        return codes_Bld.transpose(1, 2).reshape(B, d, hw[0], hw[1])

    def _quantize_tokens(self, r_Bdhw: Tensor) -> tuple[Tensor, Tensor]:
        """(codes with straight-through gradient to normalised r, bits (B, h*w, d) int64)."""
        z_Bdhw = F.normalize(r_Bdhw, dim=1)
        hard_Bdhw = torch.where(z_Bdhw > 0, 1.0, -1.0).to(z_Bdhw.dtype) / math.sqrt(self.token_dim)
        codes_Bdhw = hard_Bdhw + (z_Bdhw - z_Bdhw.detach())  # value exactly hard, gradient of z
        bits_Bld = (hard_Bdhw > 0).flatten(2).transpose(1, 2).long()
        return codes_Bdhw, bits_Bld

    def quantize(
        self,
        f_BdHW: Tensor,
        schedule: Schedule,
        *,
        flip_probability: float = 0.0,
        generator: torch.Generator | None = None,
        flip_scales: int | None = None,
        random_strength: bool = True,
        with_norms: bool = True,
        with_residuals: bool = False,
    ) -> MultiScaleTokens:
        """Residual BSQ of ``f`` over ``schedule``.

        Bitwise self-correction (Infinity `bitwise_self_correction.py`) when ``flip_probability > 0``:
        on each of the first ``flip_scales`` scales (all when None) a strength p is drawn uniformly from
        {0, 0.01, ..., flip_probability} (or p = flip_probability when ``random_strength`` is False), each bit
        flips with probability p, and the flipped bits are re-quantised into the codes that enter f_hat,
        the residual and the next inputs. The labels stay the unflipped bits of that (corrupted) residual,
        so later scales learn to correct earlier errors. Flips draw only from ``generator``.

        Args:
            f_BdHW: raw encoder latent (B, d, H, W), any float dtype (computed in float32).
            schedule: (h, w) grids, each at most (H, W).
            with_norms: compute ``residual_norms`` (a host sync; inference passes False).
            with_residuals: keep each scale's normalised residual (``MultiScaleTokens.residuals``).
        """
        grid_hw = self.check_quantize_inputs(f_BdHW, schedule, flip_probability)
        f_BdHW = f_BdHW.float()
        rest_BdHW = f_BdHW
        f_hat_BdHW = torch.zeros_like(f_BdHW)
        labels: list[Tensor] = []
        rows: list[Tensor] = []
        norms: list[Tensor] = []
        residuals: list[Tensor] = []
        num_flip = len(schedule) if flip_scales is None else flip_scales
        for k, hw in enumerate(schedule):
            r_Bdhw = resize_latent(rest_BdHW, hw, "area")
            codes_Bdhw, bits_Bld = self._quantize_tokens(r_Bdhw)
            labels.append(bits_Bld)
            if with_residuals:
                residuals.append(F.normalize(r_Bdhw, dim=1).flatten(2).transpose(1, 2))
            if flip_probability > 0 and k < num_flip:
                codes_Bdhw = self._flip(codes_Bdhw, bits_Bld, hw, flip_probability, random_strength, generator)
            up_BdHW = resize_latent(self.scale_codes(codes_Bdhw, grid_hw), grid_hw, self.upsample_mode)
            rest_BdHW = rest_BdHW - up_BdHW.detach()
            f_hat_BdHW = f_hat_BdHW + up_BdHW
            if with_norms:
                norms.append(rest_BdHW.detach().norm(dim=1).mean())
            if k + 1 < len(schedule):
                rows.append(self.next_input(f_hat_BdHW, schedule[k + 1]))  # keeps the straight-through grad
        B = f_BdHW.shape[0]
        inputs = torch.cat(rows, dim=1) if rows else f_BdHW.new_zeros(B, 0, self.token_dim)
        commitment = (f_BdHW - f_hat_BdHW.detach()).pow(2).mean()
        return MultiScaleTokens(
            f_hat_BdHW,
            labels,
            inputs,
            torch.stack(norms).tolist() if norms else [],
            commitment,
            commitment.new_zeros(()),
            residuals if with_residuals else None,
        )

    def _flip(
        self,
        codes_Bdhw: Tensor,
        bits_Bld: Tensor,
        hw: tuple[int, int],
        max_probability: float,
        random_strength: bool,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Re-quantised codes after flipping bits with a (drawn) probability; keeps the straight-through path."""
        device = bits_Bld.device
        draw_device = generator.device if generator is not None else device
        if random_strength:
            steps = int(round(max_probability * 100))
            p = int(torch.randint(0, steps + 1, (1,), generator=generator, device=draw_device).item()) / 100
        else:
            p = max_probability
        if p == 0:
            return codes_Bdhw
        flips = (torch.rand(bits_Bld.shape, generator=generator, device=draw_device) < p).to(device)
        hard = self.labels_to_codes(torch.where(flips, 1 - bits_Bld, bits_Bld), hw).to(codes_Bdhw.dtype)
        return hard + (codes_Bdhw - codes_Bdhw.detach())
