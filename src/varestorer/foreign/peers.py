"""Loading peer weights from any file we accept (the classes are pure modules in ``varestorer.archs``).

Accepted weights: the name of a peer embedded in the package (:data:`EMBEDDED_PEERS`), a checkpoint folder
written by ``save_pretrained`` (``config.json`` + ``model.safetensors`` or its shards), Real-ESRGAN
``.pth``/``.pt``/``.safetensors`` state dicts (``params_ema`` / ``params`` wrappers unwrapped) and ncnn
``.param``/``.bin`` pairs. For foreign files the config is read off the tensor shapes (or the ncnn layer
list), so no arch flag is needed.

Each peer family recognises its own foreign files: :func:`read_srvgg` and :func:`read_rrdbnet` are the
``readers`` of their entries in ``varestorer.families``, which :func:`varestorer.families.resolve` (the one
loading door; :func:`load_peer` goes through it) tries in turn.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from varestorer.archs.rrdbnet import RRDBNet, RRDBNetConfig
from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact
from varestorer.checkpoint import load_state_dict, load_strict
from varestorer.families import EMBEDDED_MODELS, WeightSource, embedded_folder, families, resolve
from varestorer.models.precleaner import PreCleaner

DEFAULT_PRECLEANER = "realesr-general-x4v3"
"""The embedded peer ``--precleaner default`` stands for (the paper's light coarse restorer)."""
# The embedded models (``varestorer.families.EMBEDDED_MODELS``) that are peers: name -> folder.
EMBEDDED_PEERS: dict[str, str] = {name: EMBEDDED_MODELS[name] for name in (DEFAULT_PRECLEANER,)}
NCNN_SUFFIXES = (".param", ".bin")
STATE_DICT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
"""Files the peer readers open as Real-ESRGAN-style state dicts."""


def peer_weights(path_or_name: str | Path) -> Path:
    """The weights an embedded peer name (``realesr-general-x4v3``) or a path stands for.

    A name wins only when no file or folder of that name exists (an explicit path is kept as given).
    """
    folder = embedded_folder(str(path_or_name)) if str(path_or_name) in EMBEDDED_PEERS else None
    if folder is not None and not Path(path_or_name).exists():
        return folder
    return Path(path_or_name)


def peer_presets() -> dict[str, tuple[type[nn.Module], Any]]:
    """Preset name -> (class, config) over every peer family of the registry (``varestorer.families``)."""
    out: dict[str, tuple[type[nn.Module], Any]] = {}
    for entry in families(peer=True).values():
        cls = entry.model_class()
        out.update({name: (cls, config) for name, config in entry.preset_table().items()})
    return out


def build_peer(name: str) -> nn.Module:
    """A randomly initialised peer arch from its preset name."""
    presets = peer_presets()
    if name not in presets:
        raise ValueError(f"unknown peer arch {name!r}; choose from: {', '.join(presets)}")
    cls, config = presets[name]
    return cls(config)


def _unwrap(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("params_ema", "params", "state_dict"):
        if key in state and isinstance(state[key], dict):
            return state[key]
    return state


def arch_from_state_dict(state: dict[str, torch.Tensor]) -> nn.Module:
    """Build the (untrained) arch whose shapes match a Real-ESRGAN-style state dict."""
    if "conv_first.weight" in state:
        first = state["conv_first.weight"]
        blocks = {k.split(".")[1] for k in state if k.startswith("body.") and k.endswith("rdb1.conv1.weight")}
        scale = {3: 4, 12: 2, 48: 1}.get(first.shape[1] // 1)
        if scale is None or not blocks:
            raise ValueError("state dict looks like RRDBNet but its first conv or blocks are unrecognised")
        config = RRDBNetConfig(
            num_in_ch=first.shape[1] * scale * scale // 16,
            num_out_ch=state["conv_last.weight"].shape[0],
            num_feat=first.shape[0],
            num_block=len(blocks),
            num_grow_ch=state["body.0.rdb1.conv1.weight"].shape[0],
            scale=scale,
        )
        return RRDBNet(config)
    if "body.0.weight" in state:
        conv_ids = sorted(int(k.split(".")[1]) for k, v in state.items() if k.startswith("body.") and v.ndim == 4)
        first, last = state["body.0.weight"], state[f"body.{conv_ids[-1]}.weight"]
        in_ch = first.shape[1]
        upscale = math.isqrt(last.shape[0] // in_ch)
        if upscale * upscale * in_ch != last.shape[0]:
            raise ValueError(f"cannot infer the scale of an SRVGGNetCompact from {tuple(last.shape)}")
        act: Literal["prelu", "relu"] = "prelu" if "body.1.weight" in state else "relu"
        return SRVGGNetCompact(SRVGGConfig(in_ch, in_ch, first.shape[0], len(conv_ids) - 2, upscale, act))
    raise ValueError("unrecognised state dict: expected Real-ESRGAN RRDBNet or SRVGGNetCompact keys")


def arch_from_ncnn(param_path: str | Path) -> nn.Module:
    """Build the (untrained) arch that an ncnn ``.param`` describes (SRVGG or RRDBNet layouts)."""
    from varestorer.foreign.ncnn import parse_param

    layers = parse_param(Path(param_path).read_text(encoding="utf-8"), where=str(param_path))
    convs = [layer for layer in layers if layer.type == "Convolution"]
    prelus = [layer for layer in layers if layer.type == "PReLU"]
    shuffles = [layer for layer in layers if layer.type == "PixelShuffle"]
    if not convs:
        raise ValueError(f"{param_path}: no convolutions; not a supported SR model")
    feat = int(convs[0].param(0))
    in_ch = int(convs[0].param(6)) // (feat * 9)
    if shuffles or (prelus and len(prelus) == len(convs) - 1):
        upscale = int(shuffles[0].param(0)) if shuffles else 1
        act: Literal["prelu", "relu"] = "prelu" if prelus else "relu"
        return SRVGGNetCompact(SRVGGConfig(in_ch, in_ch, feat, len(convs) - 2, upscale, act))
    if (len(convs) - 6) % 15 == 0 and len(convs) > 6:
        scale = {3: 4, 12: 2, 48: 1}.get(in_ch)
        if scale is None:
            raise ValueError(f"{param_path}: RRDBNet layout with {in_ch} input channels is unsupported")
        grow = int(convs[1].param(0))
        config = RRDBNetConfig(3, int(convs[-1].param(0)), feat, (len(convs) - 6) // 15, grow, scale)
        return RRDBNet(config)
    raise ValueError(f"{param_path}: unrecognised ncnn layout ({len(convs)} convolutions, {len(prelus)} PReLU)")


def _ncnn_pair(path: Path) -> tuple[Path, Path]:
    param_path, bin_path = path.with_suffix(".param"), path.with_suffix(".bin")
    if not param_path.is_file() or not bin_path.is_file():
        raise FileNotFoundError(f"ncnn models need both {param_path.name} and {bin_path.name} in {path.parent}")
    return param_path, bin_path


def _load_ncnn(model: nn.Module, path: Path) -> nn.Module:
    from varestorer.foreign.ncnn import ncnn_to_state_dict

    param_path, bin_path = _ncnn_pair(path)
    load_strict(model, ncnn_to_state_dict(param_path, bin_path, model), what=str(path))
    return model.eval()


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    load_strict(model, state, what=str(path))
    return model.eval()


def _read_peer(source: WeightSource, family: type[nn.Module]) -> nn.Module | None:
    """The peer of class ``family`` in a Real-ESRGAN state-dict file or an ncnn pair, or None if it is another."""
    path = source.path
    if path is None or path.is_dir():
        return None
    if path.suffix in NCNN_SUFFIXES:
        model = arch_from_ncnn(_ncnn_pair(path)[0])
        return _load_ncnn(model, path) if isinstance(model, family) else None
    if path.suffix.lower() not in STATE_DICT_SUFFIXES:
        return None
    state = _unwrap(source.state_dict())
    if family is RRDBNet and "conv_first.weight" not in state:
        return None
    if family is SRVGGNetCompact and ("conv_first.weight" in state or "body.0.weight" not in state):
        return None
    return _load_state(arch_from_state_dict(state), state, path)


def read_srvgg(source: WeightSource) -> nn.Module | None:
    """An SRVGGNetCompact from Real-ESRGAN ``.pth``/``.safetensors`` (``body.N`` keys) or an ncnn pair; else None."""
    return _read_peer(source, SRVGGNetCompact)


def read_rrdbnet(source: WeightSource) -> nn.Module | None:
    """An RRDBNet from Real-ESRGAN ``.pth``/``.safetensors`` (``conv_first`` keys) or an ncnn pair; else None."""
    return _read_peer(source, RRDBNet)


def load_peer(path: str | Path, *, arch: str | None = None) -> nn.Module:
    """Load peer weights from an embedded name, a folder, a ``.pth``/``.safetensors`` file, or an ncnn pair.

    For ncnn, ``path`` may name the ``.param`` or the ``.bin``; the other is found beside it.
    ``arch`` (a :func:`peer_presets` name) overrides the detected architecture.

    Returns:
        The model in eval mode on the CPU, float32.

    Raises:
        FileNotFoundError: no such file/folder.
        ValueError: unrecognised or mismatching weights.
    """
    path = peer_weights(path)
    if arch is None or path.is_dir():
        return resolve(path, require="peer", what="a peer arch").eval()
    if path.suffix in NCNN_SUFFIXES:
        return _load_ncnn(build_peer(arch), path)
    return _load_state(build_peer(arch), _unwrap(load_state_dict(path)), path)


def load_precleaner(path: str | Path) -> PreCleaner:
    """A pre-cleaner from peer weights (an embedded name, a folder, ``.pth``/``.safetensors`` or ncnn)."""
    return PreCleaner(load_peer(path)).eval()
