"""gpu: the device side of npplm: CuPy device helpers and the Numba kernels.

The engine needs nothing from here to run on the GPU: with NPPLM_BACKEND=cupy every
autograd primitive computes with CuPy through `array_module(x)`. This package holds what
is specific to hardware: whether a CUDA device is usable and synchronisation for honest
timings (device.py), the Numba CPU kernels for large float32 NumPy arrays (numba_cpu/),
and their Numba CUDA counterparts for float32 CuPy arrays (numba_cuda/), each beside the
readable reference it must equal (in autograd or npplm.layers, whose primitives call them).
Importing it needs neither CuPy nor a CUDA driver; it imports CuPy only when asked.
"""

from gpu.device import cuda_available, device_name, synchronize

__all__ = ["cuda_available", "device_name", "synchronize"]
