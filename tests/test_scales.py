from __future__ import annotations

import pytest

from varestorer.tokenizer.scales import (
    INFINITY_PN_SCALES,
    INFINITY_TEMPLATES,
    VAR_PATCH_NUMS,
    infinity_pn_schedule,
    infinity_schedule,
    nearest_template_ratio,
    schedule_for_grid,
    token_count,
    var_schedule,
)


@pytest.mark.parametrize(
    ("px", "count", "scales"), [(256, 521, 7), (512, 2521, 10), (768, 6425, 12), (1024, 10521, 13)]
)
def test_square_infinity_token_counts(px: int, count: int, scales: int) -> None:
    schedule = infinity_schedule(px, px)
    assert len(schedule) == scales and token_count(schedule) == count
    assert schedule[-1] == (px // 16, px // 16)


def test_pn_presets_and_prefixes() -> None:
    assert INFINITY_PN_SCALES == {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}
    assert [h for h, _ in infinity_pn_schedule("0.06M")] == [1, 2, 4, 6, 8, 12, 16]
    assert infinity_pn_schedule("1M")[:10] == infinity_pn_schedule("0.25M")
    with pytest.raises(ValueError, match="unknown pn"):
        infinity_pn_schedule("2M")


def test_templates_have_13_grids_and_inverse_ratios_swap() -> None:
    assert len(INFINITY_TEMPLATES) == 15  # 1:1 plus 7 ratios and their inverses
    for ratio, grids in INFINITY_TEMPLATES.items():
        assert len(grids) == 13 and grids[0] == (1, 1)
        assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(grids, grids[1:]))
        h, w = grids[-1]
        assert abs(h / w - ratio) / ratio < 0.05
    assert INFINITY_TEMPLATES[1.5][9] == (39, 26)
    assert INFINITY_TEMPLATES[0.667][9] == (26, 39)
    assert INFINITY_TEMPLATES[3.0][-1] == (111, 37) and INFINITY_TEMPLATES[0.333][-1] == (37, 111)
    assert INFINITY_TEMPLATES[2.0][:6] == ((1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8))


def test_non_square_picks_nearest_template() -> None:
    assert nearest_template_ratio(1.0) == 1.0
    assert nearest_template_ratio(1.28) == 1.25 and nearest_template_ratio(1.3) == 1.333
    assert nearest_template_ratio(0.5) == 0.5 and nearest_template_ratio(10.0) == 3.0
    schedule = infinity_schedule(768, 512)  # h/w = 1.5, ~0.39M px
    assert schedule == INFINITY_TEMPLATES[1.5][: len(schedule)] and len(schedule) in (10, 12)
    wide = infinity_schedule(512, 1024)
    assert all(h <= w for h, w in wide) and wide == INFINITY_TEMPLATES[0.5][: len(wide)]
    assert len(infinity_schedule(512, 512, num_scales=4)) == 4
    with pytest.raises(ValueError):
        infinity_schedule(0, 10)


def test_var_schedules() -> None:
    assert token_count(var_schedule(VAR_PATCH_NUMS[256])) == 680
    assert token_count(var_schedule(VAR_PATCH_NUMS[512])) == 2240
    assert token_count(var_schedule(VAR_PATCH_NUMS[1024])) == 9451
    with pytest.raises(ValueError):
        var_schedule([1, 0])


@pytest.mark.parametrize(
    "grid", [(1, 1), (2, 2), (4, 4), (5, 3), (7, 7), (8, 8), (10, 14), (16, 16), (32, 32), (100, 3)]
)
def test_schedule_for_grid_ends_at_the_grid(grid: tuple[int, int]) -> None:
    schedule = schedule_for_grid(*grid)
    assert schedule[0] == (1, 1) or min(grid) > 1 and schedule[0][0] == 1
    assert schedule[-1] == grid
    assert all(a[0] <= b[0] and a[1] <= b[1] and a != b for a, b in zip(schedule, schedule[1:]))


def test_schedule_for_grid_matches_infinity_where_it_can() -> None:
    assert schedule_for_grid(16, 16) == infinity_schedule(256, 256)
    assert schedule_for_grid(32, 32) == infinity_schedule(512, 512)
    assert [h for h, _ in schedule_for_grid(8, 8)] == [1, 2, 4, 6, 8]
    assert schedule_for_grid(26, 39) == INFINITY_TEMPLATES[0.667][:10]
    assert [h for h, _ in schedule_for_grid(7, 7)] == [1, 2, 4, 7]
    assert schedule_for_grid(10, 10)[-2:] == ((8, 8), (10, 10))
    assert schedule_for_grid(3, 5) == ((1, 1), (1, 2), (2, 4), (3, 5))


@pytest.mark.parametrize("grid", [(1, 2), (2, 1), (3, 1), (1, 3), (2, 3)])
def test_schedule_for_small_grids_outside_the_templates_ends(grid: tuple[int, int]) -> None:
    # These once looped forever: the 1.25x extension below the largest square side never grew.
    assert schedule_for_grid(*grid)[-1] == grid
