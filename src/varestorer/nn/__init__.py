"""Building blocks shared by the model code (layer 0: torch only)."""
