"""Files in and out: image decoding/encoding with every mode, atomic writes. Layer 0: torch-free."""
