"""gpu: the CUDA side of npplm (CuPy device helpers now; Numba kernels as they arrive).

The engine needs nothing from here to run on the GPU: with NPPLM_BACKEND=cupy every
autograd primitive computes with CuPy through `array_module(x)`. This package holds what
is specific to a device: whether one is usable, synchronisation for honest timings, and
(later) the Numba-jitted hot paths, each beside its readable reference. It imports CuPy
only when asked, so it is safe to import on a machine without one.
"""

from gpu.device import cuda_available, device_name, synchronize

__all__ = ["cuda_available", "device_name", "synchronize"]
