"""Numba CUDA kernels: the hot paths of the CuPy backend, each beside its reference.

With NPPLM_BACKEND=cupy every primitive already runs on the GPU through CuPy's array
functions. For the ops that dominate a step, CuPy runs several whole-array passes with
temporaries, as NumPy does on the CPU; the kernels here do each in one launch:

    softmax.py        softmax, log_softmax and cross-entropy rows (one block a row)
    normalization.py  LayerNorm and RMSNorm forward and backward (one block a row)
    rotary.py         RoPE forward and backward (one thread a rotated pair)
    attention.py      causal self-attention forward and backward (one thread a query row)

They mirror gpu/kernels/ (the Numba CPU kernels for NumPy arrays), with the same
signatures, so a primitive dispatches with one more visible line:

    if cuda_kernels.applies(x, weight):
        return cuda_kernels.rms_norm_forward(x, weight, eps)  # Numba CUDA, float32 CuPy

`applies` is true only for float32 CuPy arrays (where CuPy is installed and sees a device);
the submodules, and numba.cuda with them, are imported on the first such call, so none of
this costs anything without a GPU. Kernels take any arrays with the CUDA array interface,
write into outputs allocated with the inputs' array module, and launch on the default
stream, which CuPy also uses by default, so their order with CuPy's own work is kept.

Tests: tests/gpu/test_cuda_kernels.py and test_cuda_attention.py compare every kernel with
its reference. Without a GPU they run on Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1,
set by tests/conftest.py where CuPy sees no device), which executes the same kernel code
in Python threads, so the indexing, reductions and synchronisation are checked on every
machine; on a GPU they run on the device with CuPy arrays.
"""

import importlib

import numba
import numpy as np

# Threads per block of the row kernels: a power of two, for the tree sums. The simulator
# runs each thread as a Python thread, so it gets blocks of 8, which still walk rows longer
# than a block and reduce over several rounds, as 128 do on a device.
THREADS = 8 if numba.config.ENABLE_CUDASIM else 128

# Each public kernel wrapper and the submodule that holds it.
WHERE = {
    "softmax_forward": "softmax", "softmax_backward": "softmax",
    "log_softmax_forward": "softmax", "log_softmax_backward": "softmax",
    "cross_entropy_forward": "softmax", "cross_entropy_backward": "softmax",
    "layer_norm_forward": "normalization", "layer_norm_backward": "normalization",
    "rms_norm_forward": "normalization", "rms_norm_backward": "normalization",
    "rotary_forward": "rotary", "rotary_backward": "rotary",
    "attention_forward": "attention", "attention_backward": "attention",
}


def is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def applies(*arrays):
    """Use a CUDA kernel: every array a non-empty float32 CuPy array (None is skipped)."""
    arrays = [a for a in arrays if a is not None]
    return bool(arrays) and all(is_cupy(a) and a.dtype == np.float32 and a.size > 0
                                for a in arrays)


def __getattr__(name):
    """gpu.cuda_kernels.rms_norm_forward and the like: imported from their submodule on
    first use (PEP 562), so numba.cuda loads only when a CuPy array needs it."""
    if name in WHERE:
        return getattr(importlib.import_module(f"gpu.cuda_kernels.{WHERE[name]}"), name)
    raise AttributeError(f"module 'gpu.cuda_kernels' has no attribute {name!r}")


class RowKernels:
    """The softmax kernels as the engine's plug-in wants them (autograd.ops.nn.use_kernels):
    applies(axis, *arrays), true on the last axis only, as gpu/kernels/softmax.py has it."""

    @staticmethod
    def applies(axis, *arrays):
        return axis in (-1, arrays[0].ndim - 1) and applies(*arrays)

    def __getattr__(self, name):
        return __getattr__(name)


ROWS = RowKernels()
