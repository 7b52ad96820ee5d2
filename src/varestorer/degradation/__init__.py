"""Synthetic degradations for real-world SR training: kernels, ops, presets and the two-stage pipeline."""
