"""Peer super-resolution architectures written in this project (Real-ESRGAN's RRDBNet and
SRVGGNetCompact): pure modules. Reading foreign weight files lives in :mod:`varestorer.foreign`."""
