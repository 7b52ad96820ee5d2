"""varestorer: one-step real-world image super-resolution distilled from a next-scale VAR model.

The public API is the short list in ``__all__``. Names are resolved lazily so that
``import varestorer`` stays cheap: it imports no model, training, metrics or CLI code until a
name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it (one literal table; no discovery).
_LAZY: dict[str, str] = {
    "Restorer": "varestorer.inference.restorer",
    "MultiScaleTokenizer": "varestorer.tokenizer.autoencoder",
    "TokenizerConfig": "varestorer.tokenizer.config",
    "NextScaleTransformer": "varestorer.transformer.model",
    "TransformerConfig": "varestorer.transformer.config",
    "Student": "varestorer.models.student",
    "DegradationPipeline": "varestorer.degradation.pipeline",
    "degrade": "varestorer.degradation.pipeline",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'varestorer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
