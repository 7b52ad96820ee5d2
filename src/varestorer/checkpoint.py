"""Checkpoints: ``config.json`` + ``model.safetensors`` folders, foreign state dicts, strict loading.

A folder written by :func:`save_pretrained` rebuilds its model with no extra arguments. With a size
limit its weights are sharded in the Hugging Face layout instead: ``model-00001-of-0000N.safetensors``
... plus ``model.safetensors.index.json``; :func:`load_weights` reads either layout. Foreign
files (``.pth``/``.pt``/``.bin``) are read with ``torch.load(weights_only=True)``: no pickled code
ever runs. Loading is strict: missing, unexpected or mis-shaped tensors raise a ``ValueError`` that
lists them. ``dtype="int8"`` stores weight matrices as int8 with per-channel scales
(:mod:`varestorer.storage`); :func:`load_weights` dequantises them back to float.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import warnings
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from varestorer import __version__
from varestorer.build_limits import build_within_limits
from varestorer.config import config_from_dict, config_to_dict
from varestorer.io.atomic import atomic_directory
from varestorer.storage import (
    METADATA_KEY,
    SCHEME,
    StorageDtype,
    dequantize_state_dict,
    read_file_scheme,
    storage_dtype,
    stored_state,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_LIST_LIMIT = 12

M = TypeVar("M", bound="PretrainedMixin")


def load_state_dict(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Read tensors from ``.safetensors`` or a torch file (``weights_only=True``), on the CPU.

    ``mmap`` maps a (zip-format) torch file instead of reading it, so tensors converted one at a
    time never hold the whole file in memory twice (multi-GB checkpoints).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is corrupt, truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        state = _torch_load(path, mmap)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    except Exception as error:  # pickle.UnpicklingError and friends from weights_only loading
        raise ValueError(f"{path}: refused or unreadable torch file ({load_error_reason(error)})") from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return dict(state)


def _torch_load(path: Path, mmap: bool) -> Any:
    with warnings.catch_warnings():  # a refusal is reported as one line; torch's pickle warnings add nothing
        warnings.filterwarnings("ignore", message=".*pickle protocol.*", category=UserWarning)
        return _torch_load_unwarned(path, mmap)


def _torch_load_unwarned(path: Path, mmap: bool) -> Any:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:  # a legacy (non-zip) file cannot be mapped: read it instead
            if "zipfile" not in str(error) and "mmap" not in str(error):
                raise
    return torch.load(path, map_location="cpu", weights_only=True)


def load_error_reason(error: Exception) -> str:
    """The line of torch's weights-only refusal that says what was blocked, never its advice to set
    ``weights_only=False`` (which would run the pickled code)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line or "blocked" in line:
            return f"pickled objects beyond tensors, which could run code: {line[:200].rstrip('.')}"
    useful = [line for line in lines if "weights_only" not in line and "torch.load" not in line]
    return useful[0][:200] if useful else type(error).__name__


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def check_state_dict(module: nn.Module, state_dict: Mapping[str, Any], *, what: str = "checkpoint") -> None:
    """Raise one ``ValueError`` listing missing, unexpected and mis-shaped tensors, if any."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if isinstance(state_dict[k], torch.Tensor) and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_names(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with wrong shape: {_names(mismatched)}")
    if problems:
        raise ValueError(f"{what} does not match {type(module).__name__}: " + "; ".join(problems))


def load_strict(module: nn.Module, state_dict: Mapping[str, Any], *, what: str = "checkpoint") -> None:
    """Copy ``state_dict`` into ``module`` after :func:`check_state_dict` passes."""
    check_state_dict(module, state_dict, what=what)
    module.load_state_dict(dict(state_dict), strict=True)


def _unshared(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): clone the repeats."""
    seen: set[tuple[int, Any]] = set()
    out = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else (0, id(key))
        out[key] = tensor.clone().contiguous() if ident in seen else tensor.contiguous()
        seen.add(ident)
    return out


def shard_name(index: int, count: int) -> str:
    """The Hugging Face name of shard ``index`` (1-based) of ``count``."""
    return f"model-{index:05d}-of-{count:05d}.safetensors"


def _file_bytes(name: str, tensor: torch.Tensor) -> int:
    """An upper bound on what ``tensor`` adds to a safetensors file: its data and its header entry."""
    entry = json.dumps({name: {"dtype": "float8_e4m3fn", "shape": list(tensor.shape), "data_offsets": [2**64] * 2}})
    return tensor.numel() * tensor.element_size() + len(entry.encode("utf-8"))


_FILE_OVERHEAD = 8 + 64  # header length field, ``__metadata__`` entry, braces and alignment padding


def _check_limit(max_shard_bytes: int) -> None:
    if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be a positive number of bytes, got {max_shard_bytes!r}")


def plan_shards(state_dict: Mapping[str, torch.Tensor], max_shard_bytes: int) -> list[list[str]]:
    """Tensor names per shard: greedy in state-dict order, each file at most ``max_shard_bytes``.

    Sizes count the safetensors header too, so the files themselves stay under the limit. A
    tensor bigger than the limit on its own gets a shard of its own.
    """
    _check_limit(max_shard_bytes)
    shards: list[list[str]] = []
    current: list[str] = []
    size = _FILE_OVERHEAD
    for name, tensor in state_dict.items():
        nbytes = _file_bytes(name, tensor)
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], _FILE_OVERHEAD
        current.append(name)
        size += nbytes
    return [*shards, current] if current else shards


def _save_weights(
    folder: Path, state_dict: Mapping[str, torch.Tensor], max_shard_bytes: int | None, int8: bool
) -> None:
    """``model.safetensors``, or shards + index when the tensors do not fit in one file of the limit."""
    state = _unshared(state_dict)
    metadata = {"format": "pt", **({METADATA_KEY: SCHEME} if int8 else {})}
    shards = plan_shards(state, max_shard_bytes) if max_shard_bytes is not None else []
    if len(shards) <= 1:
        save_file(state, str(folder / WEIGHTS_NAME), metadata=metadata)
        return
    weight_map = {}
    for index, names in enumerate(shards, start=1):
        file_name = shard_name(index, len(shards))
        save_file({k: state[k] for k in names}, str(folder / file_name), metadata=metadata)
        weight_map.update(dict.fromkeys(names, file_name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index_json = {"metadata": {"total_size": total, **metadata}, "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index_json, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_pretrained(
    directory: str | Path,
    model_type: str,
    config: Any,
    state_dict: Mapping[str, torch.Tensor],
    *,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    max_shard_bytes: int | None = None,
    dtype: StorageDtype = None,
    keep_float: Collection[str] = (),
) -> Path:
    """Write ``config.json`` and the weights into ``directory`` atomically.

    ``config.json`` holds ``{"model_type", "varestorer_version", "config", **extra}``. The weights
    are one ``model.safetensors``, or, when ``max_shard_bytes`` is given and one file would exceed
    it, Hugging Face shards ``model-0000i-of-0000N.safetensors`` and ``model.safetensors.index.json``.
    ``dtype`` converts floating tensors (:func:`stored_state`; ``"int8"``: :mod:`varestorer.storage`,
    never for the names in ``keep_float``).
    """
    meta = {"model_type": model_type, "varestorer_version": __version__, "config": config_to_dict(config)}
    meta.update(extra or {})
    if max_shard_bytes is not None:
        _check_limit(max_shard_bytes)  # refuse a bad limit before touching the folder
    state = stored_state(state_dict, dtype, keep_float=keep_float)  # refuses a bad dtype before writing
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _save_weights(tmp, state, max_shard_bytes, int8=storage_dtype(dtype) == "int8")
    return Path(directory)


def _read_index(path: Path) -> dict[str, str]:
    """The ``weight_map`` of a shard index: tensor name -> shard file name in the same folder."""
    index = read_json(path, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{path}: unreadable shard index (no 'weight_map' of tensor names to shard files)")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise ValueError(f"{path}: tensor {name} maps to {shard!r}, not a .safetensors file in this folder")
    return weight_map


def _load_sharded(directory: Path) -> tuple[dict[str, Any], bool]:
    """Read the shards an index names; their contents must match the index exactly. Also: whether
    a shard declares int8 storage."""
    index_path = directory / INDEX_NAME
    weight_map = _read_index(index_path)
    state: dict[str, Any] = {}
    found_in: dict[str, str] = {}
    int8 = False
    for shard in dict.fromkeys(weight_map.values()):
        if not (directory / shard).is_file():
            raise ValueError(f"{index_path}: shard {shard} is missing")
        tensors = load_state_dict(directory / shard)
        int8 |= read_file_scheme(directory / shard) is not None
        for name in tensors:
            if name in found_in:
                raise ValueError(f"{directory}: tensor {name} is in two shards, {found_in[name]} and {shard}")
            found_in[name] = shard
        state.update(tensors)
    wrong = sorted(k for k in set(found_in) | set(weight_map) if found_in.get(k) != weight_map.get(k))
    if wrong:
        raise ValueError(f"{index_path} disagrees with its shards about {len(wrong)} tensors: {_names(wrong)}")
    return state, int8


def load_weights(directory: str | Path, *, dequantize: bool = True) -> dict[str, Any]:
    """The tensors of a checkpoint folder: ``model.safetensors``, or the shards its index names.

    int8-stored tensors come back as float32 (``load_state_dict`` copies them into the model's
    dtype); ``dequantize=False`` returns them as stored, scales included (``varestorer inspect``).

    Raises:
        FileNotFoundError: neither ``model.safetensors`` nor ``model.safetensors.index.json`` is there.
        ValueError: both are there, the index is unreadable, a shard is missing or unreadable, the
            shards disagree with the index (a tensor in two shards, or not where it says), or an
            int8 tensor's scale is missing or malformed.
    """
    directory = Path(directory)
    single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
    if single.is_file() and index.is_file():
        raise ValueError(f"{directory} holds both {WEIGHTS_NAME} and {INDEX_NAME}; remove the stale one")
    if single.is_file():
        state, int8 = load_state_dict(single), read_file_scheme(single) is not None
    elif index.is_file():
        state, int8 = _load_sharded(directory)
    else:
        raise FileNotFoundError(f"no weights in {directory} (neither {WEIGHTS_NAME} nor {INDEX_NAME})")
    return dequantize_state_dict(state, declared=int8, where=directory) if dequantize else state


def weights_scheme(directory: str | Path) -> str | None:
    """The storage scheme the weights of a checkpoint folder declare (``storage.SCHEME``), or None;
    reads the safetensors headers only."""
    directory = Path(directory)
    if (directory / WEIGHTS_NAME).is_file() or not (directory / INDEX_NAME).is_file():
        files = [directory / WEIGHTS_NAME]
    else:
        files = [directory / shard for shard in dict.fromkeys(_read_index(directory / INDEX_NAME).values())]
    schemes = {read_file_scheme(f) for f in files if f.is_file()}
    return SCHEME if SCHEME in schemes else None


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of ``path``; anything unreadable is one ``ValueError`` line naming ``what``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable {what} ({error})") from None
    except RecursionError:  # e.g. 200,000 nested arrays: json recurses once per level
        raise ValueError(f"{path}: unreadable {what} (nested too deeply)") from None


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder.

    Raises:
        FileNotFoundError: no folder or no ``config.json``.
        ValueError: the JSON is unreadable or lacks ``model_type``/``config``.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"not a varestorer checkpoint folder (no {CONFIG_NAME}): {directory}")
    meta = read_json(path, "JSON")
    if not isinstance(meta, dict) or "model_type" not in meta or "config" not in meta:
        raise ValueError(f"{path}: missing 'model_type' or 'config'")
    return meta


def buffer_names(module: nn.Module) -> set[str]:
    """State-dict names of ``module``'s buffers: what int8 storage leaves in float."""
    return {name for name, _ in module.named_buffers()}


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built from one config dataclass.

    Subclasses set ``config_class`` and keep their config in ``self.config``.
    """

    config_class: ClassVar[type]
    config: Any

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        overwrite: bool = False,
        max_shard_bytes: int | None = None,
        dtype: StorageDtype = None,
        **extra: Any,
    ) -> Path:
        """Write ``config.json`` + weights (sharded above ``max_shard_bytes``, stored as ``dtype``, e.g.
        ``"int8"``, see :func:`save_pretrained`); ``extra`` goes into the config."""
        assert isinstance(self, nn.Module)
        return save_pretrained(
            directory,
            type(self).__name__,
            self.config,
            self.state_dict(),
            extra=extra,
            overwrite=overwrite,
            max_shard_bytes=max_shard_bytes,
            dtype=dtype,
            keep_float=buffer_names(self),
        )

    @classmethod
    def from_pretrained(cls: type[M], directory: str | Path, *, device: str | torch.device = "cpu") -> M:
        meta = read_config(directory)
        if meta["model_type"] != cls.__name__:
            raise ValueError(f"{directory} holds a {meta['model_type']}, not a {cls.__name__}")
        config: Any = config_from_dict(cls.config_class, meta["config"])
        state = load_weights(directory)
        model = build_within_limits(lambda: cls(config), directory, state=state)  # type: ignore[call-arg]
        assert isinstance(model, nn.Module)
        load_strict(model, state, what=str(directory))
        return model.to(device).eval()


# ------------------------------------------------------------------------------ Hugging Face Hub
# The only network access of the package: files of Hub repositories through ``huggingface_hub``
# (an optional dependency, the ``hub`` extra), into its usual cache. ``HF_HUB_OFFLINE=1`` (or no
# network) reads the cache only; what is not there is a one-line error naming what to fetch.
HUB_EXTRA_HINT = "pip install 'varestorer[hub]'"
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".param", ".json", ".toml")


def is_hub_id(name: str | Path) -> bool:
    """True for ``owner/name`` that is no local path: neither it nor a folder ``owner`` exists, and it
    does not end like a weights file (so a mistyped local path is reported as missing, not fetched)."""
    text = str(name)
    if not _HUB_ID.fullmatch(text) or ".." in text or text.lower().endswith(_WEIGHT_SUFFIXES):
        return False
    return not Path(text).exists() and not Path(text.split("/")[0]).exists()


def _hub_options(hub: Any, repo_id: str, filename: str | None) -> tuple[dict[str, Any], str | None]:
    """Cache folder and offline flag read from the environment at call time (not at import); offline
    too when the Hub does not answer (:func:`_hub_unreachable`), so that only the cache is read. Also:
    why only the cache is read (None: the network may be used)."""
    cache = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
    )
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    why = "offline (HF_HUB_OFFLINE=1)" if offline else _hub_unreachable(hub, repo_id, filename)
    return {"cache_dir": cache, "local_files_only": why is not None}, why


_HUB_PROBE_SECONDS = 10.0
_UNREACHABLE: dict[str, str] = {}
"""Hub endpoint -> why it did not answer, once per process: the official release's four files ask once."""


def _hub_unreachable(hub: Any, repo_id: str, filename: str | None) -> str | None:
    """Why the Hub cannot be reached (one request, no retries), or None when it answers at all.

    ``huggingface_hub`` retries a failed connection with back-off for every file (73 s and 67 warnings
    for the official release's four without a network); one plain request tells the same in seconds.
    """
    try:
        endpoint = str(importlib.import_module("huggingface_hub.constants").ENDPOINT)
    except (ImportError, AttributeError):
        endpoint = "the Hugging Face Hub"
    if endpoint in _UNREACHABLE:
        return _UNREACHABLE[endpoint]
    try:
        with _quiet_hub():
            hub.get_hf_file_metadata(hub.hf_hub_url(repo_id, filename or "README.md"), timeout=_HUB_PROBE_SECONDS)
    except hub.errors.HfHubHTTPError:
        return None  # the Hub answered (404, 401...): the download itself reports what is wrong
    except Exception as error:  # no route, refused, DNS, timeout
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        _UNREACHABLE[endpoint] = f"{endpoint} unreachable: {reason}"
        return _UNREACHABLE[endpoint]
    return None


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """``huggingface_hub``'s warnings off (one line is said instead, by the caller)."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _huggingface_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ValueError(f"loading from the Hugging Face Hub needs huggingface_hub: {HUB_EXTRA_HINT}") from None
    return huggingface_hub


def _fetch_hint(repo_id: str, filename: str | None) -> str:
    what = f"{repo_id} {filename}" if filename else repo_id
    return f"fetch it with `hf download {what}` where the network is reachable (it lands in the same cache)"


def hub_file(repo_id: str, filename: str, *, revision: str | None = None) -> Path:
    """The local path of one file of a Hub repository (downloaded unless cached or offline).

    Raises:
        ValueError: ``huggingface_hub`` is not installed (the hint names the extra).
        FileNotFoundError: not cached while offline, unreachable, or no such repository/file.
    """
    hub = _huggingface_hub()
    options, why = _hub_options(hub, repo_id, filename)
    try:
        with _quiet_hub():
            return Path(hub.hf_hub_download(repo_id, filename, revision=revision, **options))
    except Exception as error:  # offline, not cached, HTTP errors: one line, no traceback
        state = why or type(error).__name__
        raise FileNotFoundError(
            f"{repo_id}/{filename} is not in the Hub cache and cannot be downloaded ({state}); "
            + _fetch_hint(repo_id, filename)
        ) from None


def hub_snapshot(repo_id: str, *, allow_patterns: list[str] | None = None, revision: str | None = None) -> Path:
    """The local folder of a Hub repository snapshot (the files matching ``allow_patterns``).

    Raises:
        ValueError: ``huggingface_hub`` is not installed.
        FileNotFoundError: not cached while offline, unreachable, or no such repository.
    """
    hub = _huggingface_hub()
    options, why = _hub_options(hub, repo_id, None)
    try:
        with _quiet_hub():
            return Path(hub.snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns, **options))
    except Exception as error:
        state = why or type(error).__name__
        raise FileNotFoundError(
            f"{repo_id} is not in the Hub cache and cannot be downloaded ({state}); " + _fetch_hint(repo_id, None)
        ) from None
