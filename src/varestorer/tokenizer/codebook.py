"""VAR's multi-scale codebook quantizer behind the same interface as the bitwise one.

Facts (VAR `models/quant.py`, docs/sources.md): V codes of d channels (VAR: 4096 x 32), nearest code by L2
distance; per scale the residual is area-downsampled, quantized, the code map is upsampled **bicubically**
to the full grid and passed through a phi conv, phi(h) = 0.5 * h + 0.5 * conv3x3(h); 4 partially shared phis
with ticks linspace(1/12, 11/12, 4), scale k using the one nearest to k / (K - 1). Teacher-forcing inputs
are the **area**-downsampled accumulated f_hat. Labels are (B, h*w) indices; logits are (B, l, V).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from varestorer.tokenizer.quantizer import MultiScaleQuantizer, MultiScaleTokens, resize_latent
from varestorer.tokenizer.scales import Schedule


class Phi(nn.Conv2d):
    """phi(h) = (1 - r) * h + r * conv3x3(h), r = 0.5 (VAR's ``quant_resi``)."""

    def __init__(self, token_dim: int, ratio: float = 0.5) -> None:
        super().__init__(token_dim, token_dim, 3, padding=1)
        self.ratio = ratio

    def forward(self, h_BdHW: Tensor) -> Tensor:
        return h_BdHW * (1 - self.ratio) + super().forward(h_BdHW) * self.ratio


class CodebookQuantizer(MultiScaleQuantizer):
    """Residual VQ over a schedule with a learnable (V, d) codebook and partially shared phi convs."""

    bitwise = False
    upsample_mode = "bicubic"

    def __init__(self, token_dim: int, codebook_size: int = 4096, num_phi: int = 4) -> None:
        super().__init__()
        if token_dim < 1 or codebook_size < 2 or num_phi < 1:
            raise ValueError("token_dim >= 1, codebook_size >= 2 and num_phi >= 1 are required")
        self.token_dim = token_dim
        self.num_classes = codebook_size
        self.input_interpolation = "area"
        self.embedding = nn.Embedding(codebook_size, token_dim)
        nn.init.uniform_(self.embedding.weight, -1 / codebook_size, 1 / codebook_size)
        self.phis = nn.ModuleList(Phi(token_dim) for _ in range(num_phi))
        # float64 like VAR's numpy ticks: exact ties (k/(K-1) halfway between ticks) resolve the same way.
        start, stop = 1 / (3 * num_phi), 1 - 1 / (3 * num_phi)
        step = (stop - start) / (num_phi - 1) if num_phi > 1 else 0.0
        self.phi_ticks = tuple(i * step + start for i in range(num_phi - 1)) + (stop if num_phi > 1 else start,)

    def code_table(self) -> Tensor:
        """(V, d) code vectors."""
        return self.embedding.weight

    def phi_index(self, scale_index: int, num_scales: int) -> int:
        """Which phi scale ``scale_index`` of ``num_scales`` uses (nearest tick to k / (K - 1))."""
        position = scale_index / (num_scales - 1) if num_scales > 1 else 0.0
        return min(range(len(self.phi_ticks)), key=lambda i: abs(self.phi_ticks[i] - position))

    def labels_to_codes(self, labels_Bl: Tensor, hw: tuple[int, int]) -> Tensor:
        """Indices (B, h*w) -> code map (B, d, h, w)."""
        if labels_Bl.ndim != 2 or labels_Bl.shape[1] != hw[0] * hw[1]:
            raise ValueError(f"labels {tuple(labels_Bl.shape)} do not fit scale {hw} (expected (B, h*w) indices)")
        return self.embedding(labels_Bl).transpose(1, 2).reshape(labels_Bl.shape[0], self.token_dim, *hw)

    def add_scale(self, f_hat_BdHW: Tensor, codes_Bdhw: Tensor, *, scale_index: int = 0, num_scales: int = 1) -> Tensor:
        H, W = f_hat_BdHW.shape[-2:]
        up_BdHW = resize_latent(codes_Bdhw, (H, W), self.upsample_mode)
        return f_hat_BdHW + self.phis[self.phi_index(scale_index, num_scales)](up_BdHW)

    def _nearest(self, r_Bdhw: Tensor) -> Tensor:
        """Indices (B, h*w) of the nearest code (L2) to each token of r."""
        r_Bld = r_Bdhw.flatten(2).transpose(1, 2)
        codes_Vd = self.embedding.weight
        distance_BlV = r_Bld.pow(2).sum(-1, keepdim=True) - 2 * r_Bld @ codes_Vd.T + codes_Vd.pow(2).sum(-1)
        return distance_BlV.argmin(dim=-1)

    def quantize(  # type: ignore[override]  # no flip_scales: self-correction here is per index
        self,
        f_BdHW: Tensor,
        schedule: Schedule,
        *,
        flip_probability: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> MultiScaleTokens:
        """Residual VQ of ``f`` over ``schedule``.

        With ``flip_probability`` p > 0 each index is replaced by a uniformly random one with probability p
        (the codebook analogue of bitwise self-correction; labels keep the nearest indices).
        f_hat is straight-through as a whole (VAR): its value is the codes' sum, its gradient goes to f.
        """
        self.check_quantize_inputs(f_BdHW, schedule, flip_probability)
        f_BdHW = f_BdHW.float()
        rest_BdHW = f_BdHW.detach()
        f_hat_BdHW = torch.zeros_like(f_BdHW)  # built from the codebook: carries the embedding's gradient
        labels: list[Tensor] = []
        rows: list[Tensor] = []
        norms: list[Tensor] = []
        for k, hw in enumerate(schedule):
            with torch.no_grad():
                index_Bl = self._nearest(resize_latent(rest_BdHW, hw, "area"))
            labels.append(index_Bl)
            if flip_probability > 0:
                draw = generator.device if generator is not None else index_Bl.device
                swap = torch.rand(index_Bl.shape, generator=generator, device=draw) < flip_probability
                random = torch.randint(0, self.num_classes, index_Bl.shape, generator=generator, device=draw)
                index_Bl = torch.where(swap.to(index_Bl.device), random.to(index_Bl.device), index_Bl)
            before = f_hat_BdHW
            f_hat_BdHW = self.add_scale(
                f_hat_BdHW, self.labels_to_codes(index_Bl, hw), scale_index=k, num_scales=len(schedule)
            )
            rest_BdHW = rest_BdHW - (f_hat_BdHW - before).detach()
            norms.append(rest_BdHW.norm(dim=1).mean())
            if k + 1 < len(schedule):
                rows.append(self.next_input(f_hat_BdHW.detach(), schedule[k + 1]))
        codebook_loss = (f_hat_BdHW - f_BdHW.detach()).pow(2).mean()
        commitment_loss = (f_BdHW - f_hat_BdHW.detach()).pow(2).mean()
        f_hat_ste = f_hat_BdHW.detach() + (f_BdHW - f_BdHW.detach())
        B = f_BdHW.shape[0]
        inputs = torch.cat(rows, dim=1) if rows else f_BdHW.new_zeros(B, 0, self.token_dim)
        return MultiScaleTokens(f_hat_ste, labels, inputs, torch.stack(norms).tolist(), commitment_loss, codebook_loss)
