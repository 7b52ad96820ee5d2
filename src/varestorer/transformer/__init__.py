"""The next-scale-prediction transformer (Infinity-style teacher/student backbone)."""
