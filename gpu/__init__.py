"""gpu: the device side of npplm: CuPy device helpers and the Numba kernels.

The engine needs nothing from here to run on the GPU: with NPPLM_BACKEND=cupy every
autograd primitive computes with CuPy through `array_module(x)`. This package holds what
is specific to hardware: whether a CUDA device is usable and synchronisation for honest
timings (device.py), the Numba CPU kernels for large float32 NumPy arrays (kernels/), and
their Numba CUDA counterparts for float32 CuPy arrays (cuda_kernels/), each beside the
readable reference it must equal. It imports CuPy and numba.cuda only when asked, so it is
safe to import on a machine without them.
"""

from gpu.device import cuda_available, device_name, synchronize

__all__ = ["cuda_available", "device_name", "synchronize"]
