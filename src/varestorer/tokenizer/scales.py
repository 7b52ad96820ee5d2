"""Scale schedules: the (h, w) token grids of a next-scale pyramid, coarse to fine. Pure Python.

Facts (Infinity `dynamic_resolution.py`, docs/sources.md): Infinity lists 13 grids per aspect ratio h/w (inverse ratios
swap h and w); a "pn" keeps the first 7 / 10 / 12 / 13 of them (0.06M / 0.25M / 0.60M / 1M, i.e. 256 / 512 /
768 / 1024 px at 1:1 with a stride-16 tokenizer: 521 / 2521 / 6425 / 10521 tokens). VAR uses square
``patch_nums`` lists. Images always have one frame (Infinity's t is 1).
"""

from __future__ import annotations

import math

Schedule = tuple[tuple[int, int], ...]
"""(h, w) token grids, coarse to fine."""

_SQUARE = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)

# h/w ratio -> 13 (h, w) grids (Infinity's ``ratio2hws``, ratios > 1 are taller than wide).
_TALL: dict[float, tuple[tuple[int, int], ...]] = {
    1.0: tuple((s, s) for s in _SQUARE),
    1.25: ((1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28), (45, 36),
           (55, 44), (70, 56)),
    1.333: ((1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27), (48, 36),
            (60, 45), (72, 54)),
    1.5: ((1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26), (48, 32),
          (63, 42), (78, 52)),
    1.75: ((1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24), (56, 32),
           (70, 40), (84, 48)),
    2.0: ((1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23), (60, 30),
          (74, 37), (90, 45)),
    2.5: ((1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20), (65, 26),
          (80, 32), (100, 40)),
    3.0: ((1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18), (72, 24),
          (90, 30), (111, 37)),
}  # fmt: skip

INFINITY_TEMPLATES: dict[float, tuple[tuple[int, int], ...]] = {
    **_TALL,
    **{round(1 / ratio, 3): tuple((w, h) for h, w in grids) for ratio, grids in _TALL.items() if ratio != 1.0},
}
"""Every Infinity aspect-ratio template: h/w ratio (inverse ratios rounded to 3 decimals) -> 13 (h, w) grids."""

INFINITY_PN_SCALES: dict[str, int] = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}
"""Infinity's pixel-count presets -> number of scales kept from a template."""

VAR_PATCH_NUMS: dict[int, tuple[int, ...]] = {
    256: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    512: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),
    1024: (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64),
}
"""VAR's square ``patch_nums`` per image side in px (stride 16)."""

INFINITY_STRIDE = 16


def token_count(schedule: Schedule) -> int:
    """Total tokens L = sum of h*w over the scales."""
    return sum(h * w for h, w in schedule)


def var_schedule(patch_nums: tuple[int, ...] | list[int]) -> Schedule:
    """VAR's square ``patch_nums`` (e.g. ``VAR_PATCH_NUMS[256]``) as a schedule."""
    if not patch_nums or any(int(p) < 1 for p in patch_nums):
        raise ValueError(f"patch_nums must be positive integers, got {list(patch_nums)}")
    return tuple((int(p), int(p)) for p in patch_nums)


def nearest_template_ratio(h_div_w: float) -> float:
    """The Infinity template ratio closest to ``h_div_w`` (absolute difference, as Infinity does)."""
    if not h_div_w > 0 or math.isinf(h_div_w):
        raise ValueError(f"aspect ratio h/w must be a positive finite number, got {h_div_w}")
    return min(INFINITY_TEMPLATES, key=lambda ratio: (abs(ratio - h_div_w), ratio))


def infinity_pn_schedule(pn: str, h_div_w: float = 1.0) -> Schedule:
    """Infinity's schedule for a pixel-count preset (``"0.06M"``, ``"0.25M"``, ``"0.60M"``, ``"1M"``)."""
    if pn not in INFINITY_PN_SCALES:
        raise ValueError(f"unknown pn {pn!r}; choose from {', '.join(INFINITY_PN_SCALES)}")
    return INFINITY_TEMPLATES[nearest_template_ratio(h_div_w)][: INFINITY_PN_SCALES[pn]]


def infinity_schedule(height_px: int, width_px: int, *, num_scales: int | None = None) -> Schedule:
    """Infinity's schedule for an image of ``height_px`` x ``width_px``.

    The template is the nearest aspect ratio. Without ``num_scales`` the pn (7, 10, 12 or 13 scales) is
    the one whose final grid area is nearest, in log scale, to ``(height_px/16) * (width_px/16)``; ties go
    to fewer scales. The final grid is a template entry, so the caller resizes the image to
    ``16 * final grid`` px (256x256 -> 16x16 exactly; 512x768 -> the 1:1.5 template's 26x39).
    """
    if height_px < 1 or width_px < 1:
        raise ValueError(f"image size must be positive, got {height_px}x{width_px}")
    grids = INFINITY_TEMPLATES[nearest_template_ratio(height_px / width_px)]
    if num_scales is None:
        target = math.log(height_px * width_px / INFINITY_STRIDE**2)
        counts = sorted(INFINITY_PN_SCALES.values())
        num_scales = min(counts, key=lambda n: (abs(math.log(grids[n - 1][0] * grids[n - 1][1]) - target), n))
    if not 1 <= num_scales <= len(grids):
        raise ValueError(f"num_scales must be in 1..{len(grids)}, got {num_scales}")
    return grids[:num_scales]


def schedule_for_grid(h: int, w: int) -> Schedule:
    """A schedule that ends exactly at the latent grid ``(h, w)``, for any grid.

    Rule: if ``(h, w)`` is an entry of an Infinity template (1:1 searched first), the template's prefix
    up to it (16x16 -> Infinity's 7-scale 256 px schedule, 8x8 -> 1,2,4,6,8). Otherwise the longer side
    follows Infinity's 1:1 sides (1, 2, 4, 6, 8, 12, ...) below it, dropping a last one within 20% of the
    side (7 -> 1, 2, 4, 7; beyond 64 in steps of 1.25x), and the shorter side is scaled proportionally
    (rounded, at least 1).
    """
    if h < 1 or w < 1:
        raise ValueError(f"latent grid must be positive, got {h}x{w}")
    for ratio in sorted(INFINITY_TEMPLATES, key=lambda r: (r != 1.0, r)):
        grids = INFINITY_TEMPLATES[ratio]
        if (h, w) in grids:
            return grids[: grids.index((h, w)) + 1]
    long_side, short_side = max(h, w), min(h, w)
    sides = [s for s in _SQUARE if s < long_side]
    while sides[-1] >= _SQUARE[-1] and sides[-1] * 1.25 < long_side:  # beyond Infinity's largest: 1.25x steps
        sides.append(round(sides[-1] * 1.25))
    while sides and sides[-1] * 1.2 > long_side:
        sides.pop()
    sides.append(long_side)
    shorts = [max(1, round(s * short_side / long_side)) for s in sides]
    return tuple((s, t) if h >= w else (t, s) for s, t in zip(sides, shorts))
