"""Kernels generated from ``valley_core``, shared by the backends that fuse the element-wise maths.

- ``trace``: records a composition of ``valley_core.elementwise`` functions as straight-line code;
- ``programs``: the compositions (one per optimizer family and pass), written only as calls into the core;
- ``scalars``: the scalars a step's programs read, from a core factory's hyperparameters;
- ``cpu``: multi-tensor C++ kernels for the CPU built from the traced programs (compiled on first use).

Nothing here defines an update rule: the arithmetic is the core's, recorded.
"""
