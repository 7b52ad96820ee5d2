"""Read ncnn models (``.param`` text + ``.bin`` weights) and map them onto torch architectures.

Format facts (ncnn's ``param`` and ``modelbin`` conventions):

- ``.param``: a magic line ``7767517``, then ``layer_count blob_count``, then one line per layer:
  ``Type Name n_inputs n_outputs inputs... outputs... k=v ...``. A key ``-233xx`` holds an array
  (``n,v1,...,vn``) for parameter id ``xx``.
- ``.bin``: the weights of each layer with weights, in layer order. A "tagged" blob starts with a
  4-byte tag: ``0x01306B47`` fp16 values (padded to 4 bytes), ``0`` or ``0x0002C056`` raw fp32,
  ``0x000D4B38`` int8 (refused), any other non-zero tag a 256-entry fp32 table followed by uint8
  indices (padded to 4 bytes). Biases, PReLU slopes and BatchNorm vectors are raw fp32 with no tag.

Mapping onto a torch module is positional: the k-th ncnn layer with weights fills the k-th torch
module with parameters (``Conv2d``, ``ConvTranspose2d``, ``PReLU``, ``Linear``, ``BatchNorm2d``), in
registration order, with strict type and shape checks. Deconvolution weights are stored by ncnn as
``(out, in, kh, kw)`` and transposed to torch's ``(in, out, kh, kw)``; this layout is exercised
only by synthetic files here (no real Deconvolution model was available to check it against).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

NCNN_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32_SCALED = 0x0002C056
TAG_INT8 = 0x000D4B38

# Layer types that carry no weights (their .bin share is empty).
WEIGHTLESS = frozenset(
    [
        "Input",
        "Split",
        "Concat",
        "Eltwise",
        "BinaryOp",
        "UnaryOp",
        "Interp",
        "PixelShuffle",
        "ReLU",
        "Sigmoid",
        "TanH",
        "Clip",
        "Crop",
        "Padding",
        "Noop",
        "Reshape",
        "Permute",
        "Flatten",
        "Softmax",
        "Pooling",
        "Dropout",
        "Slice",
        "Swish",
        "HardSwish",
        "HardSigmoid",
        "Mish",
        "GELU",
    ]
)
CONV_TYPES = ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise")


@dataclass
class NcnnLayer:
    """One layer of an ncnn graph; ``weights`` maps ``weight``/``bias``/``slope``/... to fp32 arrays."""

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, int | float | list[int | float]]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def param(self, key: int, default: int | float = 0) -> int | float:
        value = self.params.get(key, default)
        if isinstance(value, list):
            raise ValueError(f"ncnn layer {self.name}: parameter {key} is an array")
        return value


@dataclass
class NcnnGraph:
    """Parsed ncnn model: layers in file order, with the weights each one owns."""

    layers: list[NcnnLayer]

    @property
    def weighted_layers(self) -> list[NcnnLayer]:
        return [layer for layer in self.layers if layer.weights]


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(text: str, *, where: str = "param") -> list[NcnnLayer]:
    """Parse ``.param`` text into layers (weights not loaded)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != str(NCNN_MAGIC):
        raise ValueError(f"{where}: not an ncnn param file (first line must be {NCNN_MAGIC})")
    try:
        layer_count = int(lines[1].split()[0])
    except (IndexError, ValueError):
        raise ValueError(f"{where}: second line must be 'layer_count blob_count'") from None
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        try:
            n_in, n_out = int(fields[2]), int(fields[3])
            inputs, outputs = fields[4 : 4 + n_in], fields[4 + n_in : 4 + n_in + n_out]
            params: dict[int, int | float | list[int | float]] = {}
            for item in fields[4 + n_in + n_out :]:
                key_text, value = item.split("=", 1)
                key = int(key_text)
                if key <= -23300:
                    values = [_number(v) for v in value.split(",")]
                    params[-key - 23300] = values[1 : 1 + int(values[0])]
                else:
                    params[key] = _number(value)
        except (IndexError, ValueError):
            raise ValueError(f"{where}: line {number} is not a valid ncnn layer: {line[:80]!r}") from None
        if len(inputs) != n_in or len(outputs) != n_out:
            raise ValueError(f"{where}: line {number} lists fewer blobs than it declares")
        layers.append(NcnnLayer(fields[0], fields[1], inputs, outputs, params))
    if len(layers) != layer_count:
        raise ValueError(f"{where}: header declares {layer_count} layers, found {len(layers)}")
    return layers


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.offset, self.where = data, 0, where

    def take(self, count: int, what: str) -> bytes:
        if self.offset + count > len(self.data):
            raise ValueError(f"{self.where}: truncated while reading {what} ({len(self.data)} bytes)")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def raw(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int(np.frombuffer(self.take(4, what), dtype="<u4")[0])
        if tag == TAG_FP16:
            values = np.frombuffer(self.take(2 * count, what), dtype="<f2").astype(np.float32)
            self.take((-2 * count) % 4, what)  # fp16 blobs are padded to 4 bytes
            return values
        if tag in (0, TAG_FP32_SCALED):
            return self.raw(count, what)
        if tag == TAG_INT8:
            raise ValueError(f"{self.where}: {what} is int8-quantised; only fp16/fp32 models are supported")
        table = self.raw(256, what)
        indices = np.frombuffer(self.take(count, what), dtype=np.uint8)
        self.take((-count) % 4, what)
        return table[indices]


def _load_weights(layer: NcnnLayer, reader: _Reader) -> None:
    kind, what = layer.type, f"layer {layer.name} ({layer.type})"
    if kind in CONV_TYPES:
        if int(layer.param(8)):
            raise ValueError(f"{reader.where}: {what} is int8-quantised; only fp16/fp32 models are supported")
        layer.weights["weight"] = reader.tagged(int(layer.param(6)), what)
        if int(layer.param(5)):
            layer.weights["bias"] = reader.raw(int(layer.param(0)), what)
    elif kind == "InnerProduct":
        layer.weights["weight"] = reader.tagged(int(layer.param(2)), what)
        if int(layer.param(1)):
            layer.weights["bias"] = reader.raw(int(layer.param(0)), what)
    elif kind == "PReLU":
        layer.weights["slope"] = reader.raw(max(int(layer.param(0)), 1), what)
    elif kind == "BatchNorm":
        channels = int(layer.param(0))
        for name in ("slope", "mean", "var", "bias"):
            layer.weights[name] = reader.raw(channels, what)
        layer.weights["eps"] = np.asarray([float(layer.param(1, 0.0))], dtype=np.float32)
    elif kind not in WEIGHTLESS:
        raise ValueError(f"{reader.where}: unsupported ncnn layer type {kind!r} ({layer.name})")


def read_ncnn(param_path: str | Path, bin_path: str | Path) -> NcnnGraph:
    """Parse an ncnn ``.param``/``.bin`` pair; every byte of the ``.bin`` must be consumed.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: malformed param text, truncated/oversized bin, unsupported layer or storage.
    """
    param_path, bin_path = Path(param_path), Path(bin_path)
    for path in (param_path, bin_path):
        if not path.is_file():
            raise FileNotFoundError(f"ncnn file not found: {path}")
    try:
        text = param_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{param_path}: not an ncnn param file (binary .param.bin files are not supported)") from None
    layers = parse_param(text, where=str(param_path))
    reader = _Reader(bin_path.read_bytes(), str(bin_path))
    for layer in layers:
        _load_weights(layer, reader)
    if reader.offset != len(reader.data):
        raise ValueError(
            f"{bin_path}: {len(reader.data) - reader.offset} bytes left after the last layer; "
            "the .bin does not belong to this .param"
        )
    return NcnnGraph(layers)


_MATCHES: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: ("Convolution", "ConvolutionDepthWise"),
    nn.ConvTranspose2d: ("Deconvolution", "DeconvolutionDepthWise"),
    nn.PReLU: ("PReLU",),
    nn.Linear: ("InnerProduct",),
    nn.BatchNorm2d: ("BatchNorm",),
}


def _weighted_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found = []
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            if type(module) not in _MATCHES:
                raise ValueError(f"cannot map ncnn weights onto {type(module).__name__} ({name})")
            found.append((name, module))
    return found


def _tensor(values: np.ndarray, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{what}: ncnn has {values.size} values, torch expects {tuple(shape)}")
    return torch.from_numpy(values.copy()).reshape(shape)


def _convert(layer: NcnnLayer, name: str, module: nn.Module) -> dict[str, torch.Tensor]:
    prefix = f"{name}." if name else ""
    what = f"ncnn layer {layer.name} ({layer.type}) -> {name or 'model'}"
    out: dict[str, torch.Tensor] = {}
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        outputs = module.out_channels
        kernel = (int(layer.param(11, layer.param(1))), int(layer.param(1)))
        if int(layer.param(0)) != outputs or kernel != tuple(module.kernel_size):
            raise ValueError(
                f"{what}: ncnn has {layer.param(0)} outputs, kernel {kernel}; torch has {outputs}, {module.kernel_size}"
            )
        if isinstance(module, nn.ConvTranspose2d):
            c_in, c_out_g, kh, kw = module.weight.shape
            groups = module.groups
            ncnn_shape = (groups, c_out_g, c_in // groups, kh, kw)
            weight = _tensor(layer.weights["weight"], ncnn_shape, what).transpose(1, 2)
            out[prefix + "weight"] = weight.reshape(module.weight.shape).contiguous()
        else:
            out[prefix + "weight"] = _tensor(layer.weights["weight"], tuple(module.weight.shape), what)
        if ("bias" in layer.weights) != (module.bias is not None):
            raise ValueError(f"{what}: bias present in one model and not the other")
        if module.bias is not None:
            out[prefix + "bias"] = _tensor(layer.weights["bias"], tuple(module.bias.shape), what)
    elif isinstance(module, nn.PReLU):
        out[prefix + "weight"] = _tensor(layer.weights["slope"], tuple(module.weight.shape), what)
    elif isinstance(module, nn.Linear):
        out[prefix + "weight"] = _tensor(layer.weights["weight"], tuple(module.weight.shape), what)
        if module.bias is not None:
            if "bias" not in layer.weights:
                raise ValueError(f"{what}: torch expects a bias, ncnn has none")
            out[prefix + "bias"] = _tensor(layer.weights["bias"], tuple(module.bias.shape), what)
    elif isinstance(module, nn.BatchNorm2d):
        shape = (module.num_features,)
        # ncnn folds BatchNorm to a = bias - slope*mean/sqrt(var+eps), b = slope/sqrt(var+eps) at load
        # time; the stored vectors are the raw statistics, so they map one to one.
        for ncnn_name, torch_name in (("slope", "weight"), ("bias", "bias"), ("mean", "running_mean")):
            out[prefix + torch_name] = _tensor(layer.weights[ncnn_name], shape, what)
        out[prefix + "running_var"] = _tensor(layer.weights["var"], shape, what)
        out[prefix + "num_batches_tracked"] = torch.tensor(0)
    return out


def ncnn_to_state_dict(param_path: str | Path, bin_path: str | Path, arch: nn.Module) -> dict[str, torch.Tensor]:
    """Convert an ncnn model into a float32 state dict with the keys of the torch ``arch``.

    Args:
        param_path: the ``.param`` text file.
        bin_path: the ``.bin`` weights.
        arch: a torch module of the same architecture (its weights are not modified); build one from a
            preset name with ``varestorer.foreign.peers.build_peer``.

    Returns:
        ``{key: float32 tensor}`` loadable with ``load_state_dict(strict=True)`` into ``arch``.

    Raises:
        ValueError: layer count, layer type or any shape differs, or the files are malformed.
    """
    graph = read_ncnn(param_path, bin_path)
    layers = graph.weighted_layers
    modules = _weighted_modules(arch)
    if len(layers) != len(modules):
        raise ValueError(
            f"{param_path}: {len(layers)} ncnn layers with weights, but {type(arch).__name__} has "
            f"{len(modules)} weighted modules; this ncnn model is a different architecture"
        )
    state: dict[str, torch.Tensor] = {}
    for layer, (name, module) in zip(layers, modules):
        if layer.type not in _MATCHES[type(module)]:
            raise ValueError(f"ncnn layer {layer.name} is a {layer.type}, but {name} is a {type(module).__name__}")
        state.update(_convert(layer, name, module))
    expected = arch.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"conversion left {len(missing)} tensors unset: {', '.join(missing[:8])}")
    return {key: state[key] for key in expected}
