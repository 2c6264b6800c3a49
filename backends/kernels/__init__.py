"""Execution plans derived from ``valley_core`` chains, and the C++ generated from them.

- ``trace``: symbolic values that record every operation the core performs (the core runs on them);
- ``plan``: the execution plan of a chain (per-step scalars, passes cut at reductions, state mapping);
- ``cpu``: multi-tensor C++ kernels for the CPU generated from a plan (compiled on first use).

Nothing here defines an update rule or names an optimizer: the arithmetic is the core's, recorded.
"""
