"""The recipe of ``varestorer train student``: its sections, and the translation of the older flat layout.

::

    [train]            TrainConfig (optimiser, schedule, precision, accumulation, EMA, checkpoints, logging)
    [job]              JobConfig: the teacher folder and the knobs of this training run only
    [model]            the student: a StudentConfig (models/student_config.py) without the fields the teacher
    [model.precleaner]   determines (tokenizer, tokenizer_type, transformer, text_encoder, teacher); its
    [model.lq_encoder]   sub-configs are nested tables (SRVGGConfig, LQEncoderConfig), as in config.json
    [data]             DataConfig: HQ training folders, degradation preset, real camera pairs to mix in,
                       paired validation folders
    [loss.NAME]        one table per loss term (training/loss_terms.py): weight and options

Recipes written before this layout (``[model]`` holding ``teacher``, ``precleaner = true``,
``precleaner_features``, ``lq_encoder_stem_convs``..., ``[loss]`` holding ``lambda_kl``...) are translated
once, with a warning; ``--set`` overrides with those names are translated the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from varestorer.archs.srvgg import SRVGG_PRESETS
from varestorer.config import config_from_dict, config_to_dict
from varestorer.data.datasets import HQFolderDataset
from varestorer.models.lq_encoder import LQEncoderConfig
from varestorer.models.student_config import StudentConfig
from varestorer.training.config import PhotoFolderConfig, TrainConfig, parse_override, read_recipe_tables
from varestorer.training.loss_terms import LOSS_TERMS, LossTerm, LossTermConfig, loss_from_table

if TYPE_CHECKING:
    from torch.utils.data import Dataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobConfig:
    """``[job]``: what one distillation run needs beyond the student's own config."""

    teacher: str = ""
    """Teacher folder holding ``tokenizer/`` and ``transformer/`` (``from_pretrained`` folders); it sets the
    student's tokenizer, transformer and text encoder. Empty: fine-tune the merged student ``init_from`` names
    without a teacher (training/train_student.py ``fine_tuned_student``)."""
    kind: str = "student"
    """``student``: the one-step VARestorer, distilled. ``lq_conditioned_var``: the no_distill ablation, a
    multi-step VAR with ControlNet-style LQ injection trained with cross-entropy (models/lq_conditioned.py)."""
    use_prompt: bool = True
    """Condition teacher and student on the captions (``stem.txt`` sidecars) through the teacher's text
    encoder; False is the no_prompt ablation. Without a text encoder both are unconditional anyway."""
    precleaner_init: str | None = None
    """Initialise the pre-cleaner from an SRVGGNetCompact checkpoint folder (``config.json`` + safetensors, e.g.
    ``src/varestorer/weights/realesr-general-x4v3``) or peer weights (an ncnn ``.param``/``.bin`` pair or a
    Real-ESRGAN ``.pth``); its shape must be ``[model.precleaner]``."""
    lq_encoder_init: str | None = None
    """Initialise the LQ encoder's stem from the first convs of an SRVGGNetCompact (as ``precleaner_init``,
    e.g. ``realesr-general-x4v3``); its last conv and the tail start as they are (random / the teacher's)."""
    init_from: str | None = None
    """A student folder to continue from (its adapters, encoder, decoder and pre-cleaner, where this student has
    them: tensors of layers this one has not, e.g. skipped decoder Blocks, are left out). Without ``teacher``: a
    merged student (an export, or an embedded name such as ``default``) the run starts as, whole."""
    shared_teacher: bool = True
    """Run the teacher as the student's own frozen base with the adapters switched off (no second copy of
    the transformer; training/teacher_pass.py). False keeps a separate frozen teacher copy."""
    teacher_dtype: str = "float32"
    """``float32`` or ``bfloat16``: weight dtype of a separate (not shared) teacher transformer."""
    text_encoder_device: str = "cpu"
    """Where the caption encoder runs; each distinct caption is encoded once and cached in host memory
    (training/caption_cache.py), so the encoder need not sit on the training device."""
    skip_lr_scale: float = 1.0
    """Learning-rate multiplier of the skip gains and fidelity weights (no weight decay)."""
    loss_color_fix: Literal["none", "adain", "wavelet"] = "none"
    """``none``, ``adain`` or ``wavelet``: the colour fix applied to the student's output against its LQ before
    the image terms read it (inference/color.py; differentiable). Training under the fix the model ships with
    keeps the image losses off what the fix replaces (the wavelet fix: every frequency below the LQ's)."""


@dataclass(frozen=True)
class DataConfig(PhotoFolderConfig):
    degradation: str = "mild"
    """Degradation preset name (``mild``, ``realesrgan``, ``bicubic``), several joined by commas (each pair
    uses one, drawn per item: ``"mild,realesrgan"``), or a pipeline config file."""
    hflip: bool = True
    val_lq_dir: str | None = None
    val_gt_dir: str | None = None
    max_val_images: int = 16
    real_pairs: tuple[str, ...] = ()
    """Folders of real camera pairs (``lq/`` and ``gt/``, matched by stem, GT = scale x LQ in pixels; e.g.
    ``recipes/prepare_city100.py``'s output) to mix into the synthetic ones (data/real_pairs.py)."""
    real_pair_fraction: float = 0.25
    """With ``real_pairs``: the share of the training items (per epoch exactly, per batch on average) that
    are aligned crops of real pairs; the rest are the HQ photos degraded as without them."""

    def __post_init__(self) -> None:
        if self.real_pairs and not 0 < self.real_pair_fraction < 1:
            raise ValueError(f"data.real_pair_fraction must be in (0, 1), got {self.real_pair_fraction}")

    def pair_set(self, hq: HQFolderDataset, scale: int, *, seed: int) -> Dataset:
        """The training pairs: ``hq`` degraded on the fly, mixed with ``real_pairs`` when it names any."""
        from varestorer.data.pairs import DegradedPairDataset  # OpenCV: only when a run starts
        from varestorer.data.real_pairs import MixedPairDataset, RealPairDataset, real_item_count

        synthetic = DegradedPairDataset(hq, self.degradation, seed=seed)
        if not self.real_pairs:
            return synthetic
        assert hq.crop_size is not None  # the training set's crops
        real = RealPairDataset(
            self.real_pairs,
            crop_size=hq.crop_size,
            scale=scale,
            items=real_item_count(len(synthetic), self.real_pair_fraction),
            hflip=hq.hflip,
            vflip=hq.vflip,
            rot90=hq.rot90,
            seed=seed,
        )
        return MixedPairDataset(synthetic, real)


TEACHER_FIELDS = ("tokenizer", "tokenizer_type", "transformer", "text_encoder", "teacher")
"""StudentConfig fields the teacher folder sets (a recipe's ``[model]`` may not)."""

PAPER_LOSS: dict[str, dict[str, Any]] = {
    "mse": {"weight": 0.5},
    "kl": {"weight": 0.1, "temperature": 1.0},
    "lpips": {"weight": 0.25},
}
"""The paper's loss (lambda_MSE 0.5, lambda_KL 0.1, lambda_perc 0.25): a recipe without ``[loss]`` gets it."""


@dataclass(frozen=True)
class StudentRecipe:
    """A parsed ``train student`` recipe."""

    train: TrainConfig
    job: JobConfig
    model: dict[str, Any]
    """The ``[model]`` table: StudentConfig fields but the teacher's (checked names; types are checked by
    :meth:`student_config` once the teacher is known)."""
    data: DataConfig
    loss: tuple[LossTermConfig, ...]

    def student_config(self, teacher_fields: dict[str, Any] | StudentConfig) -> StudentConfig:
        """The StudentConfig: ``[model]`` over the teacher-determined fields (a dict of :data:`TEACHER_FIELDS`,
        e.g. :func:`teacher_fields`, or a StudentConfig whose every field is a default)."""
        return student_config(self.model, teacher_fields)

    def as_dict(self) -> dict[str, Any]:
        """The recipe as tables (new layout), as the Trainer stores it in checkpoints."""
        from varestorer.training.loss_terms import loss_to_table

        return {
            "train": config_to_dict(self.train),
            "job": config_to_dict(self.job),
            "model": self.model,
            "data": config_to_dict(self.data),
            "loss": loss_to_table(self.loss),
        }


def student_config(model: dict[str, Any], base: dict[str, Any] | StudentConfig) -> StudentConfig:
    """``config_from_dict(StudentConfig, ...)`` of a ``[model]`` table over ``base``.

    Raises:
        ValueError: ``model`` sets a teacher-determined field, or an unknown key or wrong type.
    """
    taken = sorted(set(model) & {*TEACHER_FIELDS, "merged"})
    if taken:
        raise ValueError(f"[model] may not set {', '.join(taken)}: the teacher folder ([job] teacher) does")
    defaults = config_to_dict(base) if isinstance(base, StudentConfig) else dict(base)
    return config_from_dict(StudentConfig, {**defaults, **model}, where="[model]")


def teacher_fields(tokenizer: Any, transformer: Any, text_encoder: Any, folder: str | Path) -> dict[str, Any]:
    """The :data:`TEACHER_FIELDS` of a student distilled from these teacher parts (a plain table)."""
    return {
        "tokenizer": config_to_dict(tokenizer.config),
        "tokenizer_type": type(tokenizer).__name__,
        "transformer": config_to_dict(transformer.config),
        "text_encoder": config_to_dict(text_encoder),
        "teacher": str(Path(folder).resolve()),
    }


# ------------------------------------------------------------------------------------ the older layout
_JOB_KEYS = {f.name for f in dataclasses.fields(JobConfig)}
_SUB_CONFIGS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    # old flat prefix -> (the sub-config's table when switched on, old key -> its field)
    "precleaner": (
        config_to_dict(SRVGG_PRESETS["precleaner-1x"]),
        {"precleaner_features": "num_feat", "precleaner_convs": "num_conv", "precleaner_upscale": "upscale"},
    ),
    "lq_encoder": (
        config_to_dict(LQEncoderConfig()),
        {"lq_encoder_features": "features", "lq_encoder_stem_convs": "stem_convs", "lq_encoder_tail_from": "tail_from"},
    ),
}
_FLAT_SUB_KEYS = {old: (name, new) for name, (_, keys) in _SUB_CONFIGS.items() for old, new in keys.items()}
_LOSS_WEIGHTS = {"lambda_mse": "mse", "lambda_kl": "kl", "lambda_latent": "latent", "lambda_perceptual": "lpips",
                 "lambda_dists": "dists"}  # fmt: skip
_OLD_LOSS_ORDER = ("mse", "kl", "latent", "lpips", "dists")  # the order the old chain summed them
_OLD_LOSS_DEFAULTS = {"lambda_mse": 0.5, "lambda_kl": 0.1, "lambda_perceptual": 0.25}
_OLD_LOSS_KEYS = {*_LOSS_WEIGHTS, "kl_temperature", "perceptual_crop"}


def _is_old_model_key(key: str, value: Any) -> bool:
    """A flat ``[model]`` key of the older layout (``precleaner = false`` is also the current spelling of none)."""
    if key in _SUB_CONFIGS:
        return value is True
    return key in _JOB_KEYS or key == "latent_teacher" or key in _FLAT_SUB_KEYS


def _set(tables: dict[str, Any], section: str, key: str, value: Any) -> None:
    """tables[section][k1][k2]... = value for a dotted ``key``, creating tables on the way."""
    table = tables.setdefault(section, {})
    *parents, last = key.split(".")
    for name in parents:
        if not isinstance(table.get(name), dict):
            table[name] = {}
        table = table[name]
    table[last] = value


def _set_old_model_key(tables: dict[str, Any], key: str, value: Any) -> None:
    model = tables.setdefault("model", {})
    if key in _JOB_KEYS:
        _set(tables, "job", key, value)
    elif key == "latent_teacher":
        tables.setdefault("loss", {}).setdefault("latent", {"weight": 0.0})["teacher"] = value
    elif key in _SUB_CONFIGS:  # precleaner = true|false: the sub-config's preset shape, or none
        if not value:
            model.pop(key, None)
        elif not isinstance(model.get(key), dict):
            model[key] = dict(_SUB_CONFIGS[key][0])
    else:
        name, field = _FLAT_SUB_KEYS[key]
        if not isinstance(model.get(name), dict):
            model[name] = dict(_SUB_CONFIGS[name][0])
        model[name][field] = value


def _set_old_loss_key(tables: dict[str, Any], key: str, value: Any) -> None:
    loss = tables.setdefault("loss", {})
    if key in _LOSS_WEIGHTS:
        name = _LOSS_WEIGHTS[key]
        entry = loss.setdefault(name, {})
        entry["weight"] = value
        if name in ("lpips", "dists"):  # the old layout's one perceptual crop is shared by both
            sibling = loss.get("dists" if name == "lpips" else "lpips", {})
            if "crop" in sibling and "crop" not in entry:
                entry["crop"] = sibling["crop"]
    elif key == "kl_temperature":
        loss.setdefault("kl", {"weight": 0.0})["temperature"] = value
    else:  # perceptual_crop
        for name in ("lpips", "dists"):
            loss.setdefault(name, {"weight": 0.0})["crop"] = value


def translate_old_layout(tables: dict[str, Any], where: str) -> dict[str, Any]:
    """A recipe's raw tables in the current layout; the old flat ``[model]``/``[loss]`` keys translated with
    the old defaults (a pre-cleaner of ``precleaner-1x``'s shape, the paper's loss weights)."""
    model, loss = tables.get("model", {}), tables.get("loss", {})
    old_model = any(_is_old_model_key(k, v) for k, v in model.items())
    new_terms = any(isinstance(v, dict) for v in loss.values())
    old_loss = any(k in _OLD_LOSS_KEYS for k in loss) or (old_model and not new_terms)
    if not (old_model or old_loss):
        return tables
    logger.warning(
        "%s uses the older recipe layout (translated): the teacher and run knobs go in [job], the student's "
        "sub-configs in [model.precleaner] / [model.lq_encoder], each loss term in [loss.NAME] with a weight "
        "(see recipes/student_small.toml and docs/training.md)",
        where,
    )
    out: dict[str, Any] = {k: v for k, v in tables.items() if k not in ("model", "loss")}
    out["loss"] = {k: v for k, v in loss.items() if k not in _OLD_LOSS_KEYS}
    if old_model:
        out["model"] = {}
        if "job" not in tables and "precleaner" not in model and "lq_encoder" not in model:
            out["model"]["precleaner"] = dict(_SUB_CONFIGS["precleaner"][0])  # the old layout's default: on
        for key, value in model.items():
            if key in _SUB_CONFIGS and value is False:
                continue
            if key in _FLAT_SUB_KEYS and model.get(_FLAT_SUB_KEYS[key][0]) is False:
                continue  # the sub-config is off: its shape keys are moot
            if _is_old_model_key(key, value):
                _set_old_model_key(out, key, value)
            else:
                out["model"][key] = value
    else:
        out["model"] = model
    if old_loss:
        defaults = {} if new_terms else _OLD_LOSS_DEFAULTS  # beside [loss.NAME] tables: only the keys given
        merged = {**defaults, **{k: v for k, v in loss.items() if k in _OLD_LOSS_KEYS}}
        for key in (*_LOSS_WEIGHTS, "kl_temperature", "perceptual_crop"):  # weights before their options
            if key in merged:
                _set_old_loss_key(out, key, merged[key])
        terms = out["loss"]
        order = [*_OLD_LOSS_ORDER, *(k for k in terms if k not in _OLD_LOSS_ORDER)]
        out["loss"] = {k: terms[k] for k in order if k in terms}
    elif not out["loss"]:
        del out["loss"]
    return out


def apply_override(tables: dict[str, Any], text: str) -> None:
    """Apply one ``section.key=value`` (``key`` may be dotted: ``model.precleaner.num_feat=64``); older names
    (``model.teacher``, ``model.precleaner_features``, ``loss.lambda_kl``...) are translated."""
    section, key, value = parse_override(text)
    if section == "model" and _is_old_model_key(key, value) and not (key in _SUB_CONFIGS and value is False):
        logger.warning("override %r uses an older name (translated; see docs/training.md)", text)
        _set_old_model_key(tables, key, value)
    elif section == "model" and key in _SUB_CONFIGS and value is False:  # TOML has no null: false is none
        tables.setdefault("model", {}).pop(key, None)
    elif section == "loss" and key in _OLD_LOSS_KEYS:
        logger.warning("override %r uses an older name (translated; see docs/training.md)", text)
        _set_old_loss_key(tables, key, value)
    else:
        _set(tables, section, key, value)


SECTIONS = ("train", "job", "model", "data", "loss")


def parse_student_recipe(
    tables: dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    *,
    where: str = "recipe",
    registry: dict[str, type[LossTerm]] = LOSS_TERMS,
) -> StudentRecipe:
    """A :class:`StudentRecipe` from raw tables (a parsed TOML/JSON file) and ``section.key=value`` overrides.

    Raises:
        ValueError: an unknown section, key, loss term or option, a wrong type, or a malformed override.
    """
    unknown = sorted(set(tables) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ValueError(f"{where}: [{name}] is not a table")
    tables = translate_old_layout(tables, where)
    for text in overrides:
        section = text.split("=", 1)[0].split(".", 1)[0].strip()
        if section not in SECTIONS:
            raise ValueError(f"override {text!r}: unknown section {section!r}; valid: {', '.join(SECTIONS)}")
        apply_override(tables, text)
    model = dict(tables.get("model", {}))
    taken = sorted(set(model) & {*TEACHER_FIELDS, "merged"})
    if taken:
        raise ValueError(f"{where}[model] may not set {', '.join(taken)}: the teacher folder ([job] teacher) does")
    valid = [f.name for f in dataclasses.fields(StudentConfig) if f.name not in {*TEACHER_FIELDS, "merged"}]
    bad = sorted(set(model) - set(valid))
    if bad:
        raise ValueError(f"{where}[model]: unknown key(s) {', '.join(bad)}; valid keys: {', '.join(valid)}")
    loss = tables["loss"] if "loss" in tables else {k: dict(v) for k, v in PAPER_LOSS.items()}
    return StudentRecipe(
        train=config_from_dict(TrainConfig, tables.get("train", {}), where=f"{where}[train]"),
        job=config_from_dict(JobConfig, tables.get("job", {}), where=f"{where}[job]"),
        model=model,
        data=config_from_dict(DataConfig, tables.get("data", {}), where=f"{where}[data]"),
        loss=loss_from_table(loss, registry, where=f"{where}[loss]"),
    )


def load_student_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudentRecipe:
    """Read a ``train student`` recipe file (``.toml`` or ``.json``) with ``section.key=value`` overrides.

    Raises:
        FileNotFoundError: no such recipe.
        ValueError: see :func:`parse_student_recipe`.
    """
    path = Path(path)
    return parse_student_recipe(read_recipe_tables(path), overrides, where=path.name)
