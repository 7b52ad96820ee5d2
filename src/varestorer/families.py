"""The one registry of model families: ``config.json`` ``model_type`` -> classes, presets, capabilities;
the weights shipped in the package; and the one door from a name, Hub id, file or folder to a model.

Every place that turns a name or a checkpoint folder into a model looks it up here: the
``Restorer`` (``restorable``), ``varestorer inspect`` (``presets``, by short ``name``), ``bench``
(the student presets), ``export`` (``exportable``), the train jobs (``trains``), and the peer-weight
reader in :mod:`varestorer.foreign` (``peer``). :func:`resolve` is the door: embedded names
(:data:`EMBEDDED_MODELS`), checkpoint folders (``config.json``), Hub ids, and foreign weights that a
family's own ``readers`` recognise (the official release, Real-ESRGAN ``.pth``/``.safetensors``, ncnn).

Adding a family is one entry below plus the family's own files (its config dataclass, its module
with ``config_class``/``from_pretrained``/``save_pretrained``, optionally a presets dict). A new
foreign weight format is a reader function beside its family plus its name in the entry's ``readers``.
Classes and readers are named as ``"module:attribute"`` strings and imported only when used, so
importing this module (and ``varestorer``) stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# Names of the models shipped inside the package: name -> folder under WEIGHTS_DIR. The one place
# a name becomes embedded weights; every command and loader resolves through :func:`embedded_folder`.
EMBEDDED_MODELS: dict[str, str] = {
    "default": "default",
    "default-tokenizer": "default-tokenizer",
    "realesr-general-x4v3": "realesr-general-x4v3",  # the light peer (BSD-3), also the v2 pre-cleaner
    "v2l": "v2l",  # the default before v2Q, int8: slower, a little cleaner on noisy photos (docs/default_model.md)
}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def embedded_folder(name: str | Path) -> Path | None:
    """The folder of an embedded model name (``default``, ``realesr-general-x4v3``...), or None.

    Only a ``str`` names one: a ``Path`` is always a path (``Path("default")`` is a local folder).
    """
    if isinstance(name, str) and name in EMBEDDED_MODELS:
        return WEIGHTS_DIR / EMBEDDED_MODELS[name]
    return None


def embedded_names() -> list[str]:
    """The embedded model names whose folders this install ships (``config.json`` present)."""
    from varestorer.checkpoint import CONFIG_NAME

    return [name for name, folder in EMBEDDED_MODELS.items() if (WEIGHTS_DIR / folder / CONFIG_NAME).is_file()]


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
    readers: tuple[str, ...] = ()
    """``"module:function"`` readers of foreign weights of this family (anything without our ``config.json``):
    ``read(source: WeightSource) -> model | None``; None when ``source`` is not their format, a one-line
    ``ValueError``/``FileNotFoundError`` when it is but cannot be read. :func:`resolve` tries them in order."""

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
        readers=("varestorer.models.official:read_official",),
    ),
    "SRVGGNetCompact": Family(
        name="srvgg",
        model="varestorer.archs.srvgg:SRVGGNetCompact",
        config="varestorer.archs.srvgg:SRVGGConfig",
        presets="varestorer.archs.srvgg:SRVGG_PRESETS",
        restorable=True,
        trains="precleaner",
        peer=True,
        readers=("varestorer.foreign.peers:read_srvgg",),
    ),
    "RRDBNet": Family(
        name="rrdbnet",
        model="varestorer.archs.rrdbnet:RRDBNet",
        config="varestorer.archs.rrdbnet:RRDBNetConfig",
        presets="varestorer.archs.rrdbnet:RRDBNET_PRESETS",
        restorable=True,
        peer=True,
        readers=("varestorer.foreign.peers:read_rrdbnet",),
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


# ------------------------------------------------------------------------------------------ the one door
@dataclass
class WeightSource:
    """What :func:`resolve` hands to each family's readers."""

    name: str
    """The name or path as the user gave it."""
    path: Path | None
    """The file or folder it stands for; None when nothing on disk has that name (a Hub id a reader may know)."""
    _tensors: dict[str, Any] | None = field(default=None, repr=False)

    def state_dict(self) -> dict[str, Any]:
        """The tensors of the file at ``path``, read once for all readers (``.safetensors`` or a torch file).

        Raises:
            ValueError: not a readable checkpoint file (one line).
        """
        if self._tensors is None:
            from varestorer.checkpoint import load_state_dict

            if self.path is None:
                raise FileNotFoundError(f"no file at {self.name}")
            self._tensors = load_state_dict(self.path)
        return self._tensors


def locate(path_or_name: str | Path) -> Path:
    """The file or folder an embedded name, a Hub id (``owner/name``, downloaded or cached) or a path stands for.

    Raises:
        FileNotFoundError: nothing there (the message lists the embedded names).
    """
    from varestorer.checkpoint import hub_snapshot, is_hub_id

    folder = embedded_folder(path_or_name)
    if folder is not None:
        path = folder
    elif is_hub_id(path_or_name):
        path = hub_snapshot(str(path_or_name))  # a Hub repository holding a checkpoint folder
    else:
        path = Path(path_or_name)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path_or_name} (embedded model names: {', '.join(EMBEDDED_MODELS)})")
    return path


def resolve(
    path_or_name: str | Path,
    *,
    require: str | None = "restorable",
    what: str = "a restorable model",
    device: Any = "cpu",
) -> Any:
    """The model a name, Hub id, file or folder stands for: the one loading door.

    In order: a reader that knows the name itself (the official release's Hub id); an embedded name,
    a Hub id or a path (:func:`locate`); a folder with ``config.json`` (:func:`load_pretrained`, by its
    ``model_type``); else the first family reader (of the families with ``require``) that recognises
    the file or folder (the official release folder, Real-ESRGAN ``.pth``/``.safetensors``, ncnn).

    Args:
        require: the capability the family must have (``"restorable"``, ``"peer"``; None: any family).
        what: how errors name the expected kind.
        device: where a ``config.json`` checkpoint is built; foreign readers load on the CPU.

    Raises:
        FileNotFoundError: nothing at that path and no such name.
        ValueError: the weights are of no family with ``require``, or unreadable (one line).
    """
    from varestorer.checkpoint import CONFIG_NAME

    candidates = families(**{require: True}) if require else FAMILIES
    readers = [spec for entry in candidates.values() for spec in entry.readers]  # imported only when tried
    if embedded_folder(path_or_name) is None and not Path(path_or_name).exists():
        model = _first_read(readers, WeightSource(str(path_or_name), None))  # a name only a reader knows
        if model is not None:
            return model
    path = locate(path_or_name)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return _load_checkpoint_folder(path, require, what, device)
    source = WeightSource(str(path_or_name), path)
    if (model := _first_read(readers, source)) is not None:
        return model
    if path.is_dir():
        return load_pretrained(path, require=require, device=device, what=what)  # raises: no config.json
    known = ", ".join(model_type for model_type, entry in candidates.items() if entry.readers)
    if source._tensors is not None:
        raise ValueError(f"{path}: unrecognised state dict: its keys fit none of {known}")
    raise ValueError(f"{path}: not {what}: neither a checkpoint folder nor a file the readers of {known} recognise")


def _first_read(readers: list[str], source: WeightSource) -> Any:
    for spec in readers:
        if (model := load_attribute(spec)(source)) is not None:
            return model
    return None


def _load_checkpoint_folder(path: Path, require: str | None, what: str, device: Any) -> Any:
    try:
        return load_pretrained(path, require=require, what=what, device=device)
    except RuntimeError as error:  # torch's load_state_dict: one line per mis-shaped tensor
        lines = [line.strip() for line in str(error).splitlines() if "size mismatch for" in line]
        if not lines:
            raise
        example = lines[0].removeprefix("size mismatch for ")
        raise ValueError(
            f"{path}: weights do not match its config.json: {len(lines)} tensor(s) of the wrong shape, e.g. {example}"
        ) from None
