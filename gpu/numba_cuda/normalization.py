"""LayerNorm and RMSNorm forward and backward as Numba CUDA kernels, float32.

The references are the `*_reference` functions of npplm/layers/normalization.py
(gpu/numba_cpu/normalization.py does the same on the CPU).
A row of x (the last axis, the model width C) is one block; its threads stride along the
row and meet in a shared-memory tree sum (softmax.py's `block_sum`):

    r_i  = 1 / sqrt(mean_c x_ic^2 + eps)         y_ic = x_ic r_i w_c
    d_ic = g_ic w_c                               xhat_ic = x_ic r_i
    dx_ic = r_i (d_ic - xhat_ic mean_c(d_ic xhat_ic))

LayerNorm centres first, and its backward has one more row mean (the mean's own path):

    mu_i = mean_c x_ic      r_i = 1 / sqrt(mean_c (x_ic - mu_i)^2 + eps)
    xhat_ic = (x_ic - mu_i) r_i      y_ic = xhat_ic w_c + b_c
    dx_ic = r_i (d_ic - mean_c d_ic - xhat_ic mean_c(d_ic xhat_ic))

The parameters' gradients dw_c = sum_i g_ic xhat_ic (and db_c = sum_i g_ic) sum over
rows, which blocks of rows cannot share without atomics; a second kernel gives each column
one thread that walks every row in order (neighbouring threads read neighbouring floats of
a row), so they are the same to the last bit on every run. The row sums are float32 tree
sums: on a row of width C their rounding error grows like log2(C), not C.
"""

import math

import numba
import numpy as np
from numba import cuda

from autograd.backend import array_module
from gpu.numba_cuda import THREADS, float32_cupy
from gpu.numba_cuda.softmax import block_sum, rows

f32 = numba.float32


@cuda.jit(device=True)
def row_rstd(x, row, eps, buffer):
    """1 / sqrt(mean(x[row]^2) + eps), as every thread of the block sees it."""
    s = f32(0.0)
    for c in range(cuda.threadIdx.x, x.shape[1], THREADS):
        s += x[row, c] * x[row, c]
    s = block_sum(buffer, s)
    return f32(1.0) / math.sqrt(s / f32(x.shape[1]) + eps)


@cuda.jit
def rms_norm_rows(x, weight, eps, y):
    row = cuda.blockIdx.x
    buffer = cuda.shared.array(THREADS, numba.float32)
    r = row_rstd(x, row, eps, buffer)
    for c in range(cuda.threadIdx.x, x.shape[1], THREADS):
        y[row, c] = x[row, c] * r * weight[c]


@cuda.jit
def rms_norm_backward_rows(g, x, weight, eps, dx, rstd):
    """dx for row blockIdx.x; its r goes to rstd for the weight-gradient kernel."""
    row = cuda.blockIdx.x
    t = cuda.threadIdx.x
    buffer = cuda.shared.array(THREADS, numba.float32)
    r = row_rstd(x, row, eps, buffer)
    C = x.shape[1]
    s = f32(0.0)
    for c in range(t, C, THREADS):
        s += g[row, c] * weight[c] * x[row, c] * r
    mean = block_sum(buffer, s) / f32(C)
    for c in range(t, C, THREADS):
        dx[row, c] = r * (g[row, c] * weight[c] - x[row, c] * r * mean)
    if t == 0:
        rstd[row] = r


@cuda.jit(device=True)
def row_mean_rstd(x, row, eps, buffer):
    """(mean, 1 / sqrt(var + eps)) of x[row], the variance of the centred values."""
    t = cuda.threadIdx.x
    C = x.shape[1]
    s = f32(0.0)
    for c in range(t, C, THREADS):
        s += x[row, c]
    mu = block_sum(buffer, s) / f32(C)
    s = f32(0.0)
    for c in range(t, C, THREADS):
        s += (x[row, c] - mu) * (x[row, c] - mu)
    return mu, f32(1.0) / math.sqrt(block_sum(buffer, s) / f32(C) + eps)


@cuda.jit
def layer_norm_rows(x, weight, bias, eps, y):
    row = cuda.blockIdx.x
    buffer = cuda.shared.array(THREADS, numba.float32)
    mu, r = row_mean_rstd(x, row, eps, buffer)
    for c in range(cuda.threadIdx.x, x.shape[1], THREADS):
        y[row, c] = (x[row, c] - mu) * r * weight[c] + bias[c]


@cuda.jit
def layer_norm_backward_rows(g, x, weight, eps, dx, mean, rstd):
    """dx for row blockIdx.x; its mean and r go to the parameter-gradient kernel."""
    row = cuda.blockIdx.x
    t = cuda.threadIdx.x
    buffer = cuda.shared.array(THREADS, numba.float32)
    mu, r = row_mean_rstd(x, row, eps, buffer)
    C = x.shape[1]
    s = f32(0.0)
    s_hat = f32(0.0)
    for c in range(t, C, THREADS):
        d = g[row, c] * weight[c]
        s += d
        s_hat += d * (x[row, c] - mu) * r
    mean_d = block_sum(buffer, s) / f32(C)
    mean_dhat = block_sum(buffer, s_hat) / f32(C)
    for c in range(t, C, THREADS):
        xhat = (x[row, c] - mu) * r
        dx[row, c] = r * (g[row, c] * weight[c] - mean_d - xhat * mean_dhat)
    if t == 0:
        mean[row] = mu
        rstd[row] = r


@cuda.jit
def weight_grad_columns(g, x, mean, rstd, dw, db):
    """dw_c = sum_i g_ic (x_ic - mean_i) r_i and db_c = sum_i g_ic, one thread a column,
    rows in order (RMSNorm passes zero means and no db)."""
    c = cuda.grid(1)
    if c < x.shape[1]:
        total = f32(0.0)
        total_g = f32(0.0)
        for i in range(x.shape[0]):
            total += g[i, c] * (x[i, c] - mean[i]) * rstd[i]
            total_g += g[i, c]
        dw[c] = total
        if db.size > 0:
            db[c] = total_g


# --- wrappers: the signatures of gpu/numba_cpu/normalization.py ----------------------------


def applies(*arrays):
    """Use these kernels: x, the weight (and bias): float32 CuPy arrays."""
    return float32_cupy(*arrays)


def layer_norm_forward(x, weight, bias, eps):
    x2 = rows(x)
    y = array_module(x).empty(x2.shape, np.float32)
    layer_norm_rows[x2.shape[0], THREADS](x2, weight, bias, np.float32(eps), y)
    return y.reshape(x.shape)


def layer_norm_backward(g, x, weight, eps):
    """(dx like x, dw like weight, db like weight)."""
    xp = array_module(x)
    x2, g2 = rows(x), rows(g)
    dx = xp.empty(x2.shape, np.float32)
    mean, rstd = (xp.empty(x2.shape[0], np.float32) for _ in range(2))
    layer_norm_backward_rows[x2.shape[0], THREADS](g2, x2, weight, np.float32(eps), dx,
                                                   mean, rstd)
    dw, db = (xp.empty(x2.shape[1], np.float32) for _ in range(2))
    blocks = (x2.shape[1] + THREADS - 1) // THREADS
    weight_grad_columns[blocks, THREADS](g2, x2, mean, rstd, dw, db)
    return dx.reshape(x.shape), dw, db


def rms_norm_forward(x, weight, eps):
    x2 = rows(x)
    y = array_module(x).empty(x2.shape, np.float32)
    rms_norm_rows[x2.shape[0], THREADS](x2, weight, np.float32(eps), y)
    return y.reshape(x.shape)


def rms_norm_backward(g, x, weight, eps):
    """(dx like x, dw like weight)."""
    xp = array_module(x)
    x2, g2 = rows(x), rows(g)
    dx = xp.empty(x2.shape, np.float32)
    rstd = xp.empty(x2.shape[0], np.float32)
    rms_norm_backward_rows[x2.shape[0], THREADS](g2, x2, weight, np.float32(eps), dx, rstd)
    dw = xp.empty(x2.shape[1], np.float32)
    blocks = (x2.shape[1] + THREADS - 1) // THREADS
    no_means, no_db = xp.zeros(x2.shape[0], np.float32), xp.empty(0, np.float32)
    weight_grad_columns[blocks, THREADS](g2, x2, no_means, rstd, dw, no_db)
    return dx.reshape(x.shape), dw
