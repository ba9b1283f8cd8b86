"""Row-wise softmax, log-softmax and cross-entropy as Numba CUDA kernels, float32.

The references are npplm/layers/softmax.py and losses.py; gpu/numba_cpu/softmax.py is the
same work as parallel loops on the CPU. Here a row (the last axis: classes, or keys) is one
block of THREADS threads. Each thread walks the row with a stride of THREADS, so
neighbouring threads read neighbouring floats, and the block combines the threads'
partial results with a tree in shared memory (`block_max`, `block_sum`):

    m_i   = max_c x_ic                      a block max
    lse_i = m_i + log sum_c exp(x_ic - m_i)  a block sum
    softmax_ic = exp(x_ic - lse_i),  log_softmax_ic = x_ic - lse_i

Cross-entropy writes one loss a row, never the (rows, C) log-probabilities:

    loss_i = lse_i - (1 - eps) x_i,t_i - eps mean_c x_ic               (eps: label smoothing)
    dloss_i/dx_ic = w_i (softmax_ic - eps / C - (1 - eps) [c == t_i])   (w_i: upstream weight)

Backward passes, with y the forward's output and g the upstream gradient:

    softmax:      dx = y (g - sum_c g y)
    log_softmax:  dx = g - exp(y) sum_c g

A nan in a row makes the row's results nan, as in the reference (the max skips it, the
sum of exponentials does not).
"""

import math

import numba
import numpy as np
from numba import cuda

from autograd.backend import array_module
from gpu.numba_cuda import THREADS, float32_cupy

f32 = numba.float32


@cuda.jit(device=True)
def block_sum(buffer, value):
    """The sum of every thread's `value`, returned to all of them (buffer: THREADS floats
    of shared memory)."""
    t = cuda.threadIdx.x
    buffer[t] = value
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:  # halve the live threads each round: log2(THREADS) rounds
        if t < step:
            buffer[t] += buffer[t + step]
        cuda.syncthreads()
        step //= 2
    total = buffer[0]
    cuda.syncthreads()  # every thread has read it before the buffer is reused
    return total


@cuda.jit(device=True)
def block_max(buffer, value):
    """The largest of every thread's `value`, returned to all of them."""
    t = cuda.threadIdx.x
    buffer[t] = value
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if t < step and buffer[t + step] > buffer[t]:
            buffer[t] = buffer[t + step]
        cuda.syncthreads()
        step //= 2
    top = buffer[0]
    cuda.syncthreads()
    return top


@cuda.jit(device=True)
def row_lse(x, row, buffer):
    """(m, lse) of x[row]: its max and log sum exp, as every thread of the block sees them."""
    t = cuda.threadIdx.x
    m = f32(-math.inf)
    for c in range(t, x.shape[1], THREADS):
        if x[row, c] > m:
            m = x[row, c]
    m = block_max(buffer, m)
    s = f32(0.0)
    for c in range(t, x.shape[1], THREADS):
        s += math.exp(x[row, c] - m)
    s = block_sum(buffer, s)
    return m, m + math.log(s)


@cuda.jit
def softmax_rows(x, out, log):
    """out[i] = softmax(x[i]), or log_softmax(x[i]) when `log`; block i does row i."""
    row = cuda.blockIdx.x
    buffer = cuda.shared.array(THREADS, numba.float32)
    m, lse = row_lse(x, row, buffer)
    for c in range(cuda.threadIdx.x, x.shape[1], THREADS):
        out[row, c] = x[row, c] - lse if log else math.exp(x[row, c] - lse)


@cuda.jit
def softmax_backward_rows(g, y, dx, log):
    """dx[i] from the upstream g[i] and the forward's output y[i] (module docstring)."""
    row = cuda.blockIdx.x
    t = cuda.threadIdx.x
    buffer = cuda.shared.array(THREADS, numba.float32)
    s = f32(0.0)
    for c in range(t, g.shape[1], THREADS):
        s += g[row, c] if log else g[row, c] * y[row, c]
    s = block_sum(buffer, s)
    for c in range(t, g.shape[1], THREADS):
        if log:
            dx[row, c] = g[row, c] - math.exp(y[row, c]) * s
        else:
            dx[row, c] = y[row, c] * (g[row, c] - s)


@cuda.jit
def cross_entropy_rows(logits, targets, eps, loss):
    """loss[i] = -log softmax(logits[i])[t_i], smoothed by eps (module docstring)."""
    row = cuda.blockIdx.x
    t = cuda.threadIdx.x
    buffer = cuda.shared.array(THREADS, numba.float32)
    m, lse = row_lse(logits, row, buffer)
    total = f32(0.0)
    for c in range(t, logits.shape[1], THREADS):
        total += logits[row, c]
    total = block_sum(buffer, total)
    if t == 0:
        mean = total / f32(logits.shape[1])
        loss[row] = lse - (f32(1.0) - eps) * logits[row, targets[row]] - eps * mean


@cuda.jit
def cross_entropy_backward_rows(logits, targets, weight, eps, grad):
    """grad[i] = weight[i] (softmax(logits[i]) - the smoothed one-hot of t_i)."""
    row = cuda.blockIdx.x
    buffer = cuda.shared.array(THREADS, numba.float32)
    m, lse = row_lse(logits, row, buffer)
    C = logits.shape[1]
    w = weight[row]
    for c in range(cuda.threadIdx.x, C, THREADS):
        q = eps / f32(C) + (f32(1.0) - eps if c == targets[row] else f32(0.0))
        grad[row, c] = w * (math.exp(logits[row, c] - lse) - q)


# --- wrappers: the signatures of gpu/numba_cpu/softmax.py ----------------------------------


def applies(axis, *arrays):
    """Use these kernels: along the last axis, float32 CuPy arrays."""
    return axis in (-1, arrays[0].ndim - 1) and float32_cupy(*arrays)


def rows(a):
    """a as a C-contiguous (rows, last axis) array of its own module (a view if it can be)."""
    xp = array_module(a)
    return xp.ascontiguousarray(a).reshape(-1, a.shape[-1])


def softmax_forward(x):
    out = array_module(x).empty(x.shape, np.float32)
    x2 = rows(x)
    softmax_rows[x2.shape[0], THREADS](x2, out.reshape(x2.shape), False)
    return out


def log_softmax_forward(x):
    out = array_module(x).empty(x.shape, np.float32)
    x2 = rows(x)
    softmax_rows[x2.shape[0], THREADS](x2, out.reshape(x2.shape), True)
    return out


def softmax_backward(g, out):
    dx = array_module(g).empty(g.shape, np.float32)
    g2 = rows(g)
    softmax_backward_rows[g2.shape[0], THREADS](g2, rows(out), dx.reshape(g2.shape), False)
    return dx


def log_softmax_backward(g, out):
    dx = array_module(g).empty(g.shape, np.float32)
    g2 = rows(g)
    softmax_backward_rows[g2.shape[0], THREADS](g2, rows(out), dx.reshape(g2.shape), True)
    return dx


def cross_entropy_forward(logits, targets, label_smoothing):
    """(...) losses of logits (..., C) at integer targets (...), every target in range."""
    xp = array_module(logits)
    x2 = rows(logits)
    loss = xp.empty(x2.shape[0], np.float32)
    t = xp.ascontiguousarray(targets.reshape(-1))
    cross_entropy_rows[x2.shape[0], THREADS](x2, t, np.float32(label_smoothing), loss)
    return loss.reshape(logits.shape[:-1])


def cross_entropy_backward(logits, targets, weight, label_smoothing):
    """dL/dlogits (..., C) given each position's upstream weight (...)."""
    xp = array_module(logits)
    x2 = rows(logits)
    grad = xp.empty(x2.shape, np.float32)
    t = xp.ascontiguousarray(targets.reshape(-1))
    w = xp.ascontiguousarray(weight.reshape(-1)).astype(np.float32, copy=False)
    cross_entropy_backward_rows[x2.shape[0], THREADS](x2, t, w, np.float32(label_smoothing),
                                                      grad)
    return grad.reshape(logits.shape)
