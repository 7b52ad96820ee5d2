"""2-D rotary position embedding with scale-aligned positions (Infinity's ``rope2d_normalized_by_hw=2``).

Every scale of a schedule is spread over one common grid (the *extent*): token (i, j) of an
(h, w) scale sits at row ``round(i * H / h)`` and column ``round(j * W / w)`` of an H x W extent,
so a coarse token and the fine tokens it covers get nearby positions. With a head width c, the
first c/2 channels (c/4 adjacent pairs) rotate by row x theta_k and the last c/2 by column x theta_k,
theta_k = base^(-4k/c), k = 0 .. c/4 - 1 (Infinity `infinity/models/basic.py`, docs/sources.md).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from varestorer.tokenizer.scales import INFINITY_TEMPLATES, Schedule, nearest_template_ratio


def rope_extent(schedule: Schedule, mode: Literal["infinity", "last"] = "infinity") -> tuple[int, int]:
    """The common (H, W) position grid that every scale of ``schedule`` is spread over.

    ``infinity``: the last (1M-pixel) grid of the aspect-ratio template nearest to the schedule's
    last scale, as every released Infinity model does (64 x 64 for 1:1); ``last``: the last scale.
    """
    if not schedule:
        raise ValueError("a schedule needs at least one scale")
    last_h, last_w = schedule[-1]
    if mode == "last":
        return last_h, last_w
    if mode != "infinity":
        raise ValueError(f"unknown RoPE extent mode {mode!r}; use 'infinity' or 'last'")
    ext_h, ext_w = INFINITY_TEMPLATES[nearest_template_ratio(last_h / last_w)][-1]
    return max(ext_h, last_h), max(ext_w, last_w)


def scale_positions(
    schedule: Schedule, extent_hw: tuple[int, int], *, device: torch.device | str | None = None
) -> Tensor:
    """Row/column positions of every token of ``schedule`` on the common grid.

    Built directly on ``device`` (a host-to-device copy would synchronise the host with the GPU).

    Returns:
        (L, 2) float64 tensor of integer-valued (row, col), scales concatenated coarse to fine,
        tokens row-major within a scale. Ties round half to even (``torch.round``).
    """
    ext_h, ext_w = extent_hw
    rows = []
    for h, w in schedule:
        r = torch.round(torch.arange(h, dtype=torch.float64, device=device) * ext_h / h)
        c = torch.round(torch.arange(w, dtype=torch.float64, device=device) * ext_w / w)
        rows.append(torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(h * w, 2))
    return torch.cat(rows)


def rope_table(positions_L2: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    """cos/sin of the rotation of each of the ``head_dim / 2`` channel pairs at each position.

    Pairs [0, c/4) rotate by row x theta_k, pairs [c/4, c/2) by column x theta_k.

    Returns:
        (2, L, head_dim / 2) float32 on the device of ``positions_L2``: ``[0]`` cosines, ``[1]`` sines.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = theta ** (-torch.arange(quarter, dtype=torch.float64, device=positions_L2.device) * 4 / head_dim)
    angles_Lp = torch.cat([positions_L2[:, :1] * freqs, positions_L2[:, 1:] * freqs], dim=-1)
    return torch.stack([angles_Lp.cos(), angles_Lp.sin()]).float()


def apply_rope(x_BHLc: Tensor, table_2Lp: Tensor, *, token_dim: int = -2) -> Tensor:
    """Rotate adjacent channel pairs (2p, 2p+1) of ``x`` by the angles of ``table[:, :, p]``.

    One complex multiply per element (pair (a, b) as a + ib times cos + i sin), the same formula as the
    explicit (a cos - b sin, a sin + b cos), in one kernel instead of seven passes.

    Args:
        x_BHLc: queries or keys (..., L, c) (or L at ``token_dim``, e.g. -4 for (B, L, 2, H, c)); rotated
            in float32, returned in their dtype (contiguous).
        table_2Lp: (2, L, c/2) from :func:`rope_table`, for the same L tokens.
    """
    x = x_BHLc.float().contiguous()
    rotation_Lp = torch.complex(table_2Lp[0].float(), table_2Lp[1].float())
    if token_dim != -2:
        rotation_Lp = rotation_Lp.view(rotation_Lp.shape[0], *([1] * (-token_dim - 2)), rotation_Lp.shape[1])
    out = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * rotation_Lp)
    return out.flatten(-2).to(x_BHLc.dtype)
