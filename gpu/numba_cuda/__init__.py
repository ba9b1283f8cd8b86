"""Numba CUDA kernels: the hot paths of the CuPy backend, each beside its reference.

With NPPLM_BACKEND=cupy every primitive already runs on the GPU through CuPy's array
functions. For the ops that dominate a step, CuPy runs several whole-array passes with
temporaries, as NumPy does on the CPU; the kernels here do each in one launch:

    softmax.py        softmax, log_softmax and cross-entropy rows (one block a row)
    normalization.py  LayerNorm and RMSNorm forward and backward (one block a row)
    rotary.py         RoPE forward and backward (one thread a rotated pair)
    attention.py      causal self-attention forward and backward (one thread a query row)

They mirror gpu/numba_cpu/ (the Numba CPU kernels for NumPy arrays), with the same
signatures, and are reached the same way: the primitive's file imports the module by name
and dispatches with one visible line before its reference code,

    if cuda_normalization.applies(x, weight):
        return cuda_normalization.rms_norm_forward(x, weight, eps)  # Numba CUDA, CuPy

Each module's `applies` holds its op's own conditions (float32 CuPy arrays, via
`float32_cupy` below, and whatever shapes the kernel handles). Importing a module defines
its kernels without compiling them: `@cuda.jit` compiles on the first launch, for the
argument types of that launch, so a machine without a GPU pays only numba.cuda's import.

Kernels take any arrays with the CUDA array interface, write into outputs allocated with
the inputs' array module, and launch on the default stream, which CuPy also uses by
default, so their order with CuPy's own work is kept.

Tests: tests/gpu/test_cuda_kernels.py and test_cuda_attention.py compare every kernel with
its reference. Without a GPU they run on Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1,
set by tests/conftest.py where CuPy sees no device, before numba.cuda is imported), which
executes the same kernel code in Python threads, so the indexing, reductions and
synchronisation are checked on every machine; on a GPU they run on the device with CuPy
arrays. tests/gpu/test_cuda_compile.py compiles every kernel to sm_90 PTX without a device.
"""

import numba
import numpy as np

# Threads per block of the row kernels: a power of two, for the tree sums. The simulator
# runs each thread as a Python thread, so it gets blocks of 8, which still walk rows longer
# than a block and reduce over several rounds, as 128 do on a device.
THREADS = 8 if numba.config.ENABLE_CUDASIM else 128


def is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def float32_cupy(*arrays):
    """Every array (None skipped) a non-empty float32 CuPy array: what the kernels take."""
    arrays = [a for a in arrays if a is not None]
    return bool(arrays) and all(is_cupy(a) and a.dtype == np.float32 and a.size > 0
                                for a in arrays)
