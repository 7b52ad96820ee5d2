"""Training and validation data: HQ image folders, paired LQ/GT folders, on-the-fly degraded pairs."""
