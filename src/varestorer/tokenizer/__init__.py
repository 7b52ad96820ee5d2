"""Multi-scale bitwise tokenizer (Infinity's BSQ-VAE): schedules, quantizers, autoencoder, official weights.

Light on purpose: import the submodules (``scales``, ``config``, ``quantizer``, ``autoencoder``,
``infinity``) directly.
"""
