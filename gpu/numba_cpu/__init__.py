"""Numba-compiled hot paths, each beside the readable reference it must equal.

A kernel here is never the only definition of an op: the primitive in `autograd` or
`npplm.layers` holds the reference formula, and one visible dispatch line there calls the
kernel where it applies (large float32 NumPy arrays). tests/gpu/ compares every kernel
with its reference.

Threads: `npplm.runtime.configure()` chooses Numba's sleeping "workqueue" pool before the
first kernel runs (the CLI and the Trainer call it); importing this package changes
nothing in the process. Why the pool matters is explained there.
"""
