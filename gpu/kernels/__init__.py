"""Numba-compiled hot paths, each beside the readable reference it must equal.

A kernel here is never the only definition of an op: the primitive in `autograd` or
`npplm.layers` holds the reference formula, and one visible dispatch line there calls the
kernel where it applies (large float32 NumPy arrays). tests/gpu/test_kernels.py compares
every kernel with its reference.
"""
