"""The one registry of model families: ``config.json`` ``model_type`` -> classes, presets, capabilities.

Every place that turns a name or a checkpoint folder into a model looks it up here: the
``Restorer`` (``restorable``), ``varestorer inspect`` (``presets``, by short ``name``), ``bench``
(the student presets), ``export`` (``exportable``), the train jobs (``trains``), and the peer-weight
reader in :mod:`varestorer.foreign` (``peer``).

Adding a family is one entry below plus the family's own files (its config dataclass, its module
with ``config_class``/``from_pretrained``/``save_pretrained``, optionally a presets dict). Classes
are named as ``"module:attribute"`` strings and imported only when used, so importing this module
(and ``varestorer``) stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


def load_attribute(spec: str) -> Any:
    """``"package.module:name"`` -> the attribute (imports the module)."""
    module_name, _, name = spec.partition(":")
    return getattr(importlib.import_module(module_name), name)


@dataclass(frozen=True)
class Family:
    """One model family: what builds it, its named shapes, and what it can do."""

    name: str
    """Short name: ``inspect FAMILY:PRESET``, and the ``[model] kind`` of ``train student`` for its models."""
    model: str
    """``"module:Class"``: an ``nn.Module`` with ``config_class``, ``from_pretrained(folder)`` and
    ``save_pretrained(folder)``; ``Class(config)`` builds it with random weights."""
    config: str
    """``"module:Class"``: the frozen config dataclass saved in ``config.json``."""
    presets: str | None = None
    """``"module:DICT"``: preset name -> config, or None."""
    restorable: bool = False
    """Implements ``OneStepSR`` (``varestorer.inference.restorer``): ``Restorer.from_pretrained`` loads it."""
    exportable: bool = False
    """Has ``merged()`` and ``save_pretrained(dtype=...)``: ``varestorer export`` accepts it."""
    trains: str | None = None
    """The ``varestorer train JOB`` that produces it (None: not trained here)."""
    has_tokenizer: bool = False
    """Holds a multi-scale tokenizer (``encode``/``decode`` of images to token pyramids)."""
    is_tokenizer: bool = False
    """Is itself a tokenizer (``encode``, ``tokenize``, ``decode``, ``stride``, ``token_dim``,
    ``default_schedule``, ``quantizer``): a teacher's ``tokenizer/`` folder and ``reconstruct`` take it."""
    peer: bool = False
    """A peer architecture whose foreign weight files ``varestorer.foreign`` recognises."""
    qualified_only: bool = False
    """Its preset names repeat another family's (student:infinity-2b): reachable only as ``name:preset``."""

    def model_class(self) -> Any:
        return load_attribute(self.model)

    def config_class(self) -> Any:
        return load_attribute(self.config)

    def preset_table(self) -> dict[str, Any]:
        return load_attribute(self.presets) if self.presets else {}


# model_type (the class name written in config.json) -> family. One literal table; keep it sorted by layer.
FAMILIES: dict[str, Family] = {
    "MultiScaleTokenizer": Family(
        name="tokenizer",
        model="varestorer.tokenizer.autoencoder:MultiScaleTokenizer",
        config="varestorer.tokenizer.config:TokenizerConfig",
        presets="varestorer.tokenizer.config:TOKENIZER_PRESETS",
        trains="tokenizer",
        has_tokenizer=True,
        is_tokenizer=True,
    ),
    "TAEF2Tokenizer": Family(
        name="taef2",
        model="varestorer.tokenizer.taef2:TAEF2Tokenizer",
        config="varestorer.tokenizer.taef2:TAEF2Config",
        presets="varestorer.tokenizer.taef2:TAEF2_PRESETS",
        trains="tokenizer",
        has_tokenizer=True,
        is_tokenizer=True,
    ),
    "NextScaleTransformer": Family(
        name="transformer",
        model="varestorer.transformer.model:NextScaleTransformer",
        config="varestorer.transformer.config:TransformerConfig",
        presets="varestorer.transformer.config:TRANSFORMER_PRESETS",
    ),
    "Teacher": Family(
        name="teacher",
        model="varestorer.models.teacher:Teacher",
        config="varestorer.models.teacher_config:TeacherConfig",
        trains="teacher",
        has_tokenizer=True,
    ),
    "Student": Family(
        name="student",
        model="varestorer.models.student:Student",
        config="varestorer.models.student_config:StudentConfig",
        presets="varestorer.models.student_config:STUDENT_PRESETS",
        restorable=True,
        exportable=True,
        trains="student",
        has_tokenizer=True,
        qualified_only=True,
    ),
    "LQConditionedVAR": Family(
        name="lq_conditioned_var",
        model="varestorer.models.lq_conditioned:LQConditionedVAR",
        config="varestorer.models.student_config:StudentConfig",
        restorable=True,
        exportable=True,
        trains="student",
        has_tokenizer=True,
    ),
    "OfficialVARestorer": Family(
        name="official",
        model="varestorer.models.official:OfficialVARestorer",
        config="varestorer.models.official_config:OfficialConfig",
        presets="varestorer.models.official_config:OFFICIAL_PRESETS",
        restorable=True,
        has_tokenizer=True,
    ),
    "SRVGGNetCompact": Family(
        name="srvgg",
        model="varestorer.archs.srvgg:SRVGGNetCompact",
        config="varestorer.archs.srvgg:SRVGGConfig",
        presets="varestorer.archs.srvgg:SRVGG_PRESETS",
        restorable=True,
        trains="precleaner",
        peer=True,
    ),
    "RRDBNet": Family(
        name="rrdbnet",
        model="varestorer.archs.rrdbnet:RRDBNet",
        config="varestorer.archs.rrdbnet:RRDBNetConfig",
        presets="varestorer.archs.rrdbnet:RRDBNET_PRESETS",
        restorable=True,
        peer=True,
    ),
}


def families(**capabilities: Any) -> dict[str, Family]:
    """The families (by model_type) whose fields equal every given value, e.g. ``families(restorable=True)``."""
    unknown = set(capabilities) - {f.name for f in fields(Family)}
    if unknown:
        raise TypeError(f"Family has no field {', '.join(sorted(unknown))}")
    return {t: f for t, f in FAMILIES.items() if all(getattr(f, k) == v for k, v in capabilities.items())}


def family(model_type: str) -> Family:
    """The family of a ``config.json`` ``model_type``.

    Raises:
        ValueError: no family has that model type.
    """
    if model_type not in FAMILIES:
        raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def family_named(name: str) -> tuple[str, Family]:
    """(model_type, family) of a short family name (``tokenizer``, ``student``...)."""
    for model_type, entry in FAMILIES.items():
        if entry.name == name:
            return model_type, entry
    raise ValueError(f"unknown model family {name!r}; choose from {', '.join(f.name for f in FAMILIES.values())}")


def load_pretrained(
    directory: str | Path, *, require: str | None = None, device: Any = "cpu", what: str = "a model"
) -> Any:
    """Build the model a checkpoint folder holds, dispatching on its ``config.json`` ``model_type``.

    Args:
        require: a capability (``"restorable"``, ``"exportable"``, ``"peer"``...) the family must have.
        what: how the error names the expected kind (``"a restorable model"``).

    Raises:
        FileNotFoundError: no ``config.json`` in ``directory``.
        ValueError: an unknown model type, or a family without ``require``.
    """
    from varestorer.checkpoint import read_config

    model_type = read_config(directory)["model_type"]
    entry = FAMILIES.get(model_type)
    if entry is None or (require is not None and not getattr(entry, require)):
        accepted = ", ".join(families(**{require: True}) if require else FAMILIES)
        raise ValueError(f"{directory} holds a {model_type}, not {what}; {require or 'known'} types: {accepted}")
    return entry.model_class().from_pretrained(directory, device=device)
