"""LayerNorm and RMSNorm forward and backward as parallel Numba loops, float32, CPU.

The references are `layer_norm_reference` and friends in npplm.layers.normalization:
whole-array NumPy code on one thread, each step (mean, centre, square, mean, scale, ...)
a full pass that writes a temporary as large as the input, about ten of them for the
backward. Here a row of C values is one task of a `prange` and stays in L1 cache while
it is read a few times; nothing as large as the input is written but the result.

Per row (C values x_j, the row's statistics in float64):

    mean = sum_j x_j / C,   var = sum_j (x_j - mean)^2 / C,   rstd = 1 / sqrt(var + eps)
    xhat_j = (x_j - mean) rstd,   y_j = xhat_j w_j + b_j

The variance takes a second pass over the centred row (not E[x^2] - E[x]^2, which cancels
to nothing for x = 1000 + small noise), and every element is computed in float64 and
rounded once to float32: the float32 mean of such a row is off by half an ulp of 1000,
3e-5, which would be a 3e-3 error in xhat where the noise is 0.01. The backward recomputes
mean and rstd from x (two passes over a row in cache, instead of storing them), then, with
d_j = g_j w_j (llm.c's layernorm_backward derives it term by term):

    dx_j = rstd (d_j - mean_k d_k - xhat_j mean_k(d_k xhat_k))
    dw   = sum over rows of g xhat,   db = sum over rows of g

RMSNorm is the same without the mean and the bias: rrms = 1 / sqrt(mean(x^2) + eps),
xhat = x rrms, y = xhat w, dx = rrms (d - xhat mean(d xhat)).

dw and db are sums over rows, which threads must not add into one buffer in whatever order
they finish. The rows are cut into CHUNKS fixed blocks (a function of the row count only,
not of the thread count); the `prange` runs over the blocks, each block adds its rows in
order into its own row of a (CHUNKS, C) float64 buffer, and the blocks are then added in
block order. The results are the same bit for bit on 1 thread or 16
(tests/gpu/test_normalization_kernel.py), so a resumed training run repeats its losses.

Only float32 arrays of at least MIN_SIZE elements come here; float64 (gradient checks)
always takes the exact reference. `python benchmarks/bench_kernels.py` times both on the
residual stream of benchmarks/side_by_side_training.py's GPT-2, (B T, C) = (2048, 384)
float32, forward + backward; on the 2-core CI-sized machine, 2026-12-04, shared, medians
of 15: LayerNorm 6.0-7.5 ms -> 1.5-2.0 ms (3x to 4.7x), RMSNorm 4.9-5.4 ms -> 1.3-1.8 ms
(3x to 3.8x), on 1 thread as on 2. In that GPT-2's training step its 13 LayerNorms took
87-92 ms forward + backward with the reference and 27-34 ms with the kernels; alternating
steps with and without them in one process, medians of 10: 1400 -> 1311 ms a step
(OPENBLAS_THREAD_TIMEOUT=4, a quiet machine; under load from other jobs, no difference
could be seen: 1609 -> 1674 ms, the steps themselves ranging 1470-1870 ms).
"""

import math

import numba
import numpy as np

# gpu/numba_cpu/softmax.py's flags: fused multiply-adds, sums that may be regrouped (so that
# the row sums vectorise; the grouping is fixed when compiling, the same on every thread),
# nothing that would turn a nan into a number.
FLAGS = {"contract", "nsz", "reassoc"}

MIN_SIZE = 1 << 14  # below this, starting threads costs more than the loop saves
CHUNKS = 32  # blocks of rows for the parameter gradients' sums; never the thread count


@numba.njit(fastmath=FLAGS, inline="always")
def mean_rstd(row, eps):
    """(mean, 1 / sqrt(var + eps)) of a row in float64, the variance from a second pass."""
    C = row.size
    total = 0.0
    for j in range(C):
        total += row[j]
    mean = total / C
    sq = 0.0
    for j in range(C):
        c = row[j] - mean
        sq += c * c
    return mean, 1.0 / math.sqrt(sq / C + eps)


@numba.njit(fastmath=FLAGS, inline="always")
def rrms(row, eps):
    """1 / sqrt(mean(x^2) + eps) of a row, in float64."""
    sq = 0.0
    for j in range(row.size):
        v = np.float64(row[j])
        sq += v * v
    return 1.0 / math.sqrt(sq / row.size + eps)


@numba.njit(fastmath=FLAGS, inline="always")
def chunk_bounds(k, N, chunks):
    """Rows [lo, hi) of block k of `chunks` near-equal blocks of N rows."""
    return k * N // chunks, (k + 1) * N // chunks


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def layer_norm_forward_rows(x, w, b, eps):
    """(x - mean) rstd w + b a row, (N, C)."""
    N, C = x.shape
    y = np.empty_like(x)
    for i in numba.prange(N):
        mean, rstd = mean_rstd(x[i], eps)
        for j in range(C):
            y[i, j] = (x[i, j] - mean) * rstd * w[j] + b[j]
    return y


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def layer_norm_backward_rows(g, x, w, eps):
    """(dx (N, C), dw (C,), db (C,)): see the module docstring."""
    N, C = x.shape
    dx = np.empty_like(x)
    chunks = min(CHUNKS, N)
    dw_part = np.zeros((chunks, C))  # float64, one row a block of rows
    db_part = np.zeros((chunks, C))
    for k in numba.prange(chunks):
        lo, hi = chunk_bounds(k, N, chunks)
        for i in range(lo, hi):
            mean, rstd = mean_rstd(x[i], eps)
            sum_d = 0.0
            sum_dx = 0.0
            for j in range(C):
                xhat = (x[i, j] - mean) * rstd
                d = np.float64(g[i, j]) * w[j]
                sum_d += d
                sum_dx += d * xhat
                dw_part[k, j] += g[i, j] * xhat
                db_part[k, j] += g[i, j]
            mean_d, mean_dx = sum_d / C, sum_dx / C
            for j in range(C):
                xhat = (x[i, j] - mean) * rstd
                d = np.float64(g[i, j]) * w[j]
                dx[i, j] = rstd * (d - mean_d - xhat * mean_dx)
    dw = np.zeros(C)
    db = np.zeros(C)
    for k in range(chunks):  # the blocks in order: the same sums on any number of threads
        for j in range(C):
            dw[j] += dw_part[k, j]
            db[j] += db_part[k, j]
    return dx, dw.astype(np.float32), db.astype(np.float32)


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def rms_norm_forward_rows(x, w, eps):
    """x rrms w a row, (N, C)."""
    N, C = x.shape
    y = np.empty_like(x)
    for i in numba.prange(N):
        r = rrms(x[i], eps)
        for j in range(C):
            y[i, j] = x[i, j] * r * w[j]
    return y


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def rms_norm_backward_rows(g, x, w, eps):
    """(dx (N, C), dw (C,)): dx = rrms (d - xhat mean(d xhat)), dw = sum over rows g xhat."""
    N, C = x.shape
    dx = np.empty_like(x)
    chunks = min(CHUNKS, N)
    dw_part = np.zeros((chunks, C))
    for k in numba.prange(chunks):
        lo, hi = chunk_bounds(k, N, chunks)
        for i in range(lo, hi):
            r = rrms(x[i], eps)
            sum_dx = 0.0
            for j in range(C):
                xhat = x[i, j] * r
                sum_dx += np.float64(g[i, j]) * w[j] * xhat
                dw_part[k, j] += g[i, j] * xhat
            mean_dx = sum_dx / C
            for j in range(C):
                xhat = x[i, j] * r
                dx[i, j] = r * (np.float64(g[i, j]) * w[j] - xhat * mean_dx)
    dw = np.zeros(C)
    for k in range(chunks):
        for j in range(C):
            dw[j] += dw_part[k, j]
    return dx, dw.astype(np.float32)


# --- the callers' side: any (..., C) array, rows on the last axis ---------------------------


def rows(a):
    """`a` as a C-contiguous (N, C) array: one compiled version of each kernel."""
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1])


def vec(a):
    """A parameter (C,), contiguous."""
    return np.ascontiguousarray(a)


def layer_norm_forward(x, weight, bias, eps):
    y = layer_norm_forward_rows(rows(x), vec(weight), vec(bias), float(eps))
    return y.reshape(x.shape)


def layer_norm_backward(g, x, weight, eps):
    """(dx, dw, db) as npplm.layers.normalization.layer_norm_grad_reference."""
    dx, dw, db = layer_norm_backward_rows(rows(g), rows(x), vec(weight), float(eps))
    return dx.reshape(x.shape), dw, db


def rms_norm_forward(x, weight, eps):
    return rms_norm_forward_rows(rows(x), vec(weight), float(eps)).reshape(x.shape)


def rms_norm_backward(g, x, weight, eps):
    """(dx, dw) as npplm.layers.normalization.rms_norm_grad_reference."""
    dx, dw = rms_norm_backward_rows(rows(g), rows(x), vec(weight), float(eps))
    return dx.reshape(x.shape), dw


def applies(x, *others):
    """Use a kernel: x large and float32 with rows on its last axis, and every other array
    (the parameters (C,), an incoming gradient like x) float32 NumPy too."""
    return (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim >= 1
            and x.size >= MIN_SIZE and x.shape[-1] > 0
            and all(type(a) is np.ndarray and a.dtype == np.float32
                    and a.shape in (x.shape, x.shape[-1:]) for a in others))
