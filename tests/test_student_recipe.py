"""The `train student` recipe: [model] is a StudentConfig, [job] the run's knobs, [loss.NAME] the terms;
the older flat layout and its --set names are translated to the same result."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from varestorer.config import config_to_dict
from varestorer.models.student_config import STUDENT_PRESETS, StudentConfig
from varestorer.training.student_recipe import (
    TEACHER_FIELDS,
    JobConfig,
    load_student_recipe,
    parse_student_recipe,
)

ROOT = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data"
BEFORE = json.loads((DATA / "student_recipes_de90701.json").read_text())
ALL_RECIPES = sorted((ROOT / "recipes").glob("student*.toml"))
RECIPES = [path for path in ALL_RECIPES if path.name in BEFORE]
"""The student recipes that existed at de90701 (newer ones are checked by the parse test below)."""
"""What each recipe parsed into with the code at de90701 (its own ModelConfig, build_student and LossConfig),
recorded on a tiny teacher: the student's own fields, the job knobs, the loss weights."""

TINY_TEACHER = {k: v for k, v in config_to_dict(STUDENT_PRESETS["tiny"]).items() if k in TEACHER_FIELDS}
OLD_TERMS = {"lambda_mse": "mse", "lambda_kl": "kl", "lambda_latent": "latent", "lambda_perceptual": "lpips",
             "lambda_dists": "dists"}  # fmt: skip


def _own_fields(config: StudentConfig) -> dict:
    return {k: v for k, v in config_to_dict(config).items() if k not in TEACHER_FIELDS}


def _effective_loss(recipe) -> list[tuple[str, float, dict]]:
    return [(t.name, t.weight, t.options) for t in recipe.loss if t.weight > 0]


def _old_effective_loss(loss: dict, latent_teacher: str | None) -> list[tuple[str, float, dict]]:
    out = []
    for key, name in OLD_TERMS.items():
        if loss[key] > 0:
            options = {"kl": {"temperature": loss["kl_temperature"]}, "latent": {"teacher": latent_teacher}}.get(
                name, {}
            )
            if name in ("lpips", "dists") and loss["perceptual_crop"] is not None:
                options = {"crop": loss["perceptual_crop"]}
            out.append((name, loss[key], options))
    return out


def test_the_recipes_under_test_are_the_recorded_ones() -> None:
    assert sorted(p.name for p in RECIPES) == sorted(BEFORE)  # none of them was removed or renamed


@pytest.mark.parametrize("path", [p for p in ALL_RECIPES if p.name not in BEFORE], ids=lambda p: p.name)
def test_newer_recipes_parse_in_the_current_layout(path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        recipe = load_student_recipe(path)
    assert "older recipe layout" not in caplog.text
    config = recipe.student_config(TINY_TEACHER)
    assert config.image_size == 256 and recipe.loss and (recipe.job.teacher or recipe.job.init_from)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_into_the_student_job_and_loss_it_did_before(path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        recipe = load_student_recipe(path)
    assert "older recipe layout" not in caplog.text  # converted
    before = BEFORE[path.name]
    own = _own_fields(recipe.student_config(TINY_TEACHER))
    assert {k: own[k] for k in before["student"]} == before["student"]
    defaults = config_to_dict(StudentConfig())  # fields added since then: at their defaults
    assert {k: own[k] for k in set(own) - set(before["student"])} == {
        k: defaults[k] for k in set(own) - set(before["student"])
    }
    job = config_to_dict(recipe.job)
    job_before = {k: v for k, v in before["job"].items() if k != "latent_teacher"}
    assert {k: job[k] for k in job_before} == job_before
    job_defaults = config_to_dict(JobConfig())  # fields added since then (loss_color_fix): at their defaults
    assert {k: job[k] for k in set(job) - set(job_before)} == {k: job_defaults[k] for k in set(job) - set(job_before)}
    assert _effective_loss(recipe) == _old_effective_loss(before["loss"], before["job"]["latent_teacher"])


def test_an_old_layout_recipe_is_translated_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        old = load_student_recipe(DATA / "student_v2q_old_layout.toml")
    assert "older recipe layout" in caplog.text and "[job]" in caplog.text
    new = load_student_recipe(ROOT / "recipes" / "student_v2q.toml")
    assert old.student_config(TINY_TEACHER) == new.student_config(TINY_TEACHER)
    assert old.job == new.job and old.train == new.train and old.data == new.data
    assert _effective_loss(old) == _effective_loss(new)


def _tiny(*overrides: str):
    return load_student_recipe(DATA / "student_tiny.toml", overrides)


def test_old_override_names_are_translated(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        recipe = _tiny("model.teacher=T", "model.kind=lq_conditioned_var", "model.use_prompt=false",
                       "model.precleaner_features=16", "model.skip_lr_scale=10.0", "loss.lambda_kl=0.0",
                       "loss.perceptual_crop=48", "loss.lambda_dists=0.25", "loss.kl_temperature=2.0")  # fmt: skip
    assert "older name" in caplog.text
    assert (recipe.job.teacher, recipe.job.kind, recipe.job.use_prompt, recipe.job.skip_lr_scale) == (
        "T",
        "lq_conditioned_var",
        False,
        10.0,
    )
    config = recipe.student_config(TINY_TEACHER)
    assert config.precleaner is not None and (config.precleaner.num_feat, config.precleaner.num_conv) == (16, 2)
    # the perceptual crop set before DISTS is switched on is shared by it, as the old single crop was
    assert _effective_loss(recipe) == [("mse", 0.5, {}), ("dists", 0.25, {"crop": 48})]
    assert [t.options for t in recipe.loss if t.name == "kl"] == [{"temperature": 2.0}]
    # no_precleaner, and an LQ encoder from the flat names, and a latent teacher
    recipe = _tiny("model.precleaner=false", "model.lq_encoder=true", "model.lq_encoder_stem_convs=2",
                   "model.latent_teacher=V2", "loss.lambda_latent=1.0")  # fmt: skip
    config = recipe.student_config(TINY_TEACHER)
    assert config.precleaner is None and config.lq_encoder is not None and config.lq_encoder.stem_convs == 2
    assert ("latent", 1.0, {"teacher": "V2"}) in _effective_loss(recipe)


def test_new_names_reach_nested_tables_and_any_student_field() -> None:
    recipe = _tiny("model.precleaner.num_feat=12", "loss.kl.weight=0.5", "model.color_fix=wavelet",
                   "model.tile_overlap=4", "loss.lpips.weight=0.25", "loss.lpips.crop=32")  # fmt: skip
    config = recipe.student_config(TINY_TEACHER)
    assert config.precleaner is not None and config.precleaner.num_feat == 12
    assert (config.color_fix, config.tile_overlap) == ("wavelet", 4)  # fields the old flat table could not set
    assert _effective_loss(recipe) == [("mse", 0.5, {}), ("kl", 0.5, {}), ("lpips", 0.25, {"crop": 32})]
    # every StudentConfig field but the teacher's is a [model] key, with no code per field
    settable = {f.name for f in dataclasses.fields(StudentConfig)} - {*TEACHER_FIELDS, "merged"}
    for name in settable:
        value = config_to_dict(config)[name]
        assert parse_student_recipe({"model": {name: value}}).model == {name: value}


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.lora_rnk=4", "unknown key"),
        ("model.transformer.depth=2", "may not set transformer"),
        ("loss.perceptual.weight=1.0", "unknown loss term"),
        ("loss.kl.temperture=2.0", "unknown option"),
        ("job.teachr=x", "unknown key"),
        ("modell.x=1", "unknown section"),
        ("model.attention=sideways", "not one of"),
    ],
)
def test_unknown_or_teacher_owned_keys_are_errors(override: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny(override).student_config(TINY_TEACHER)


@pytest.mark.parametrize("args", sorted((ROOT / "recipes" / "ablations").glob("*.args")), ids=lambda p: p.stem)
def test_the_ablation_overrides_apply_to_the_new_layout(args: Path) -> None:
    base = load_student_recipe(ROOT / "recipes" / "student_small.toml")
    overrides = [line.strip() for line in args.read_text().splitlines() if line.strip() and not line.startswith("#")]
    recipe = load_student_recipe(ROOT / "recipes" / "student_small.toml", overrides)
    changed = {
        "causal": recipe.student_config(TINY_TEACHER).attention == "causal",
        "no_distill": recipe.job.kind == "lq_conditioned_var",
        "no_kl": [t.name for t in recipe.loss if t.weight > 0] == ["mse", "lpips"],
        "no_precleaner": recipe.student_config(TINY_TEACHER).precleaner is None,
        "no_prompt": recipe.job.use_prompt is False,
    }[args.stem]
    assert changed and recipe != base


def test_old_keys_beside_the_new_layout_translate_without_the_old_defaults() -> None:
    tables = {
        "job": {"teacher": "T"},
        "model": {"image_size": 64, "precleaner_features": 16, "init_from": "I"},
        "loss": {"kl": {"weight": 0.5}, "lambda_dists": 0.25},
    }
    recipe = parse_student_recipe(tables)
    assert (recipe.job.teacher, recipe.job.init_from) == ("T", "I")
    assert recipe.model["precleaner"]["num_feat"] == 16 and recipe.model["precleaner"]["num_conv"] == 8
    assert _effective_loss(recipe) == [("kl", 0.5, {}), ("dists", 0.25, {})]
    assert parse_student_recipe({"job": {"teacher": "T"}, "model": {"image_size": 64}}).model == {"image_size": 64}
