"""Numba-compiled hot paths, each beside the readable reference it must equal.

A kernel here is never the only definition of an op: the primitive in `autograd` or
`npplm.layers` holds the reference formula, and one visible dispatch line there calls the
kernel where it applies (large float32 NumPy arrays). tests/gpu/ compares every kernel
with its reference.

Threads. A training step alternates these kernels with OpenBLAS's GEMMs, and each thread
pool busy-waits for a while after its work is done, on the cores the other one needs next.
Numba's default pool on Linux is OpenMP (libgomp), whose idle threads spin: a (2048, 384) x
(384, 1536) GEMM right after an attention kernel took 19 ms instead of 12 ms on the 2-core
machine. Numba's own "workqueue" pool sleeps when idle (12 ms), and runs the kernels as fast,
so it is chosen here, before any kernel runs, unless NUMBA_THREADING_LAYER says otherwise.
(It does not allow kernels launched from several Python threads at once; npplm launches
them from one.) OpenBLAS's idle threads spin too, for about 0.1 s after each GEMM, slowing
the kernel that follows (7 ms -> 14 ms for the attention forward); that is set only before
NumPy loads OpenBLAS, from outside: OPENBLAS_THREAD_TIMEOUT=4 (see README, Benchmarks).
"""

import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
