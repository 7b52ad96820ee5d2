"""Peer super-resolution architectures written in this project (Real-ESRGAN's RRDBNet and
SRVGGNetCompact), an ncnn weight reader, and the literal registry of peer archs."""
