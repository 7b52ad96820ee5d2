"""Reading weight files written by other projects: Real-ESRGAN ``.pth``/``.safetensors`` state dicts and
ncnn ``.param``/``.bin`` pairs, with the architecture read off the tensors. The architectures themselves
are pure modules in :mod:`varestorer.archs`; which class a checkpoint folder holds is looked up in
:mod:`varestorer.families`."""
