"""Training jobs and their shared infrastructure (layer 4; the only code that touches torch.distributed)."""
