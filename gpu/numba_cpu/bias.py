"""A linear layer's bias on every core: added to each row forward, its rows summed backward.

For y = x W^T + b with N rows (every token of the batch) and C outputs:

    forward    y[n] += b                          for each row n      (N, C) += (C,)
    backward   db = sum over n of g[n]            g = dL/dy (N, C) -> (C,)

The references are NumPy's `y += bias` and `g.sum(axis=0)` in npplm/layers/linear.py, one
thread each. They are passes over the GEMM's output and its gradient, as large as the
activations (BERT-base's FFN: 1024 x 3072 floats, 12.6 MB), and in BERT-base's training
step they took 30 and 32 ms of the linear layers' 2037 (2-core Intel Xeon VM with AVX-512,
2026-12-06); PyTorch adds the bias inside its GEMM call (addmm). Here the rows are split
between the cores.

The sum, like the normalization kernels' parameter gradients (normalization.py), cuts the
rows into CHUNKS fixed blocks, a function of the row count only: each block adds its rows
in order into its own partial sum, and the partial sums are then added in block order. The
result is the same bit for bit on 1 thread or 16 (tests/gpu/test_bias_kernel.py). It is
not NumPy's bit for bit (NumPy adds the rows in one running sum): both are float32 sums of
N numbers, and they agree to float32 rounding.

Only float32 arrays of at least MIN_SIZE elements come here; float64 (gradient checks)
takes the reference.
"""

import numba
import numpy as np

FLAGS = {"contract", "nsz", "reassoc"}  # normalization.py's: no nan turns into a number
MIN_SIZE = 1 << 14  # below this, starting threads costs more than the loop saves
CHUNKS = 32  # blocks of rows for the sum; never the thread count


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def add_to_rows(y, b):
    """y[n] += b for every row n, in place; y (N, C), b (C,)."""
    N, C = y.shape
    for n in numba.prange(N):
        row = y[n]
        for j in range(C):
            row[j] += b[j]


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def sum_rows(g):
    """sum over n of g[n], (C,), from g (N, C): blocks of rows, then the blocks in order."""
    N, C = g.shape
    chunks = min(CHUNKS, N)
    part = np.zeros((chunks, C), dtype=np.float32)
    for k in numba.prange(chunks):
        lo, hi = k * N // chunks, (k + 1) * N // chunks
        acc = part[k]
        for n in range(lo, hi):
            row = g[n]
            for j in range(C):
                acc[j] += row[j]
    total = np.zeros(C, dtype=np.float32)
    for k in range(chunks):  # the same order on any number of threads
        for j in range(C):
            total[j] += part[k, j]
    return total


def applies(a, b=None):
    """Use a kernel: a C-contiguous float32 NumPy array of rows (N, C), large enough to
    split, and the bias (C,) float32 NumPy too."""
    return (type(a) is np.ndarray and a.dtype == np.float32 and a.ndim == 2
            and a.flags.c_contiguous and a.size >= MIN_SIZE
            and (b is None or (type(b) is np.ndarray and b.dtype == np.float32
                               and b.shape == a.shape[1:])))


def add_bias(y, b):
    """y += b on every row of y (N, C), in place (y must be writable)."""
    add_to_rows(y, np.ascontiguousarray(b))


def bias_grad(g):
    """db = g.sum(axis=0) for g (N, C)."""
    return sum_rows(g)
