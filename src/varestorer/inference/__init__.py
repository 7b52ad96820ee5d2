"""Inference: tiling, colour fixes and the ``Restorer`` (imported lazily; this file stays light)."""
