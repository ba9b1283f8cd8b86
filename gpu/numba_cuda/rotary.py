"""RoPE forward and backward as Numba CUDA kernels, float32.

The reference is `rotary_reference` / `rotary_grad_reference` in npplm/layers/rotary.py
(where the rotation and its VJP are derived; gpu/numba_cpu/rotary.py is the CPU kernel).
With half = D / 2, each pair (x_j, x_{j+half}) of a head vector turns by its angle:

    y_j        = x_j cos_j - x_{j+half} sin_j
    y_{j+half} = x_{j+half} cos_{j+half} + x_j sin_{j+half}

and the VJP turns g back (the transposed rotation):

    dx_j        = g_j cos_j + g_{j+half} sin_{j+half}
    dx_{j+half} = g_{j+half} cos_{j+half} - g_j sin_j

One thread per pair: B H T half threads, each reading two inputs and four table entries
and writing two outputs, a purely memory-bound pass. The tables are (T, D), shared by the
batch, or (B, T, D), one per sequence (left-padded batches); both come in as (1 or B, T, D).
"""

import numpy as np
from numba import cuda

from autograd.backend import array_module
from gpu.numba_cuda import THREADS, float32_cupy


@cuda.jit
def rotate_pairs(x, cos, sin, y, sign):
    """The forward (sign = 1) or its VJP (sign = -1) on x (B, H, T, D), into y."""
    B, H, T, D = x.shape
    half = D // 2
    n = cuda.grid(1)
    if n >= B * H * T * half:
        return
    j = n % half  # n = ((b H + h) T + t) half + j
    t = (n // half) % T
    h = (n // (half * T)) % H
    b = n // (half * T * H)
    tb = b if cos.shape[0] > 1 else 0  # one table per sequence, or one for all
    a, z = x[b, h, t, j], x[b, h, t, j + half]
    if sign > 0:
        y[b, h, t, j] = a * cos[tb, t, j] - z * sin[tb, t, j]
        y[b, h, t, j + half] = z * cos[tb, t, j + half] + a * sin[tb, t, j + half]
    else:
        y[b, h, t, j] = a * cos[tb, t, j] + z * sin[tb, t, j + half]
        y[b, h, t, j + half] = z * cos[tb, t, j + half] - a * sin[tb, t, j]


def rotate(x, cos, sin, sign):
    xp = array_module(x)
    x = xp.ascontiguousarray(x)
    cos, sin = (xp.ascontiguousarray(a if a.ndim == 3 else a[None]) for a in (cos, sin))
    y = xp.empty(x.shape, np.float32)
    pairs = x.size // 2
    rotate_pairs[(pairs + THREADS - 1) // THREADS, THREADS](x, cos, sin, y, sign)
    return y


# --- wrappers: the signatures of gpu/numba_cpu/rotary.py ------------------------------------


def applies(x, cos, sin):
    """Use these kernels: float32 CuPy arrays, head vectors of pairs (an even last axis)."""
    return float32_cupy(x, cos, sin) and x.shape[-1] % 2 == 0


def rotary_forward(x, cos, sin):
    """rope(x), x (B, H, T, D) (any strides), cos and sin (T, D) or (B, T, D)."""
    return rotate(x, cos, sin, 1)


def rotary_backward(g, cos, sin):
    """dL/dx from g = dL/drope(x): the inverse rotation."""
    return rotate(g, cos, sin, -1)
