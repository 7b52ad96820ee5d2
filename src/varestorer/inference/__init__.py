"""Inference: the next-scale sampler, tiling and the one-step restorer."""
