"""GELU (erf and tanh forms) and SiLU forward and backward as parallel Numba loops, float32,
CPU.

The references are `gelu_reference` and friends in `npplm.layers.activations`: whole-array
NumPy code, four to six passes over the data on one thread, and an erf that NumPy lacks (a
Numba ufunc over libm's double-precision erf, about 30 ns an element). Here each direction
is one pass on every core, in float32 arithmetic that LLVM can vectorise, and erf is a
rational function (no libm call), with the coefficients of Eigen's float erf:

    erf(z) ~ z P(z^2) / Q(z^2),  z clamped to [-4, 4]   (P degree 6, Q degree 4 in z^2)

Its largest error over the real line is 6.5e-8 (checked against math.erf in
tests/gpu/test_kernels.py), below float32's resolution near 1. The exponentials (the erf
form's backward exp(-x^2 / 2), the tanh form written with sigmoid(2u) = 0.5 (1 + tanh u),
SiLU's sigmoid) are the attention kernel's float32 polynomial `exp32` (relative error
3e-7), not libm's expf: one call an element does not vectorise, and the tanh form's
forward and backward on GPT-2's (8, 256, 1536) activations went from 6.1 and 5.8 ms to
1.6 and 1.6 ms with it (2-core Intel VM, 2026-12-06).

Only float32 arrays come here; float64 (gradient checks) always takes the exact reference.
`python benchmarks/bench_kernels.py` prints both times on BERT-base's feed-forward
activation, (8, 128, 3072) float32; on the 2-core CI-sized machine, 2026-11-23, forward +
backward took 78.9 ms -> 13.0 ms (erf form, 6x) and 71.7 ms -> 18.5 ms (tanh form, 4x).
SiLU, LLaMA's SwiGLU gate, came last: in a DPO step on SmolLM2-135M (benchmarks/
side_by_side_dpo.py) NumPy's single-threaded SiLU took 1.2 s of 7.1 (benchmarks/
profile_step.py's timers, 2-core Intel VM, 2026-12-06). Its kernels follow the reference's
overflow-free formula.
"""

import math

import numba
import numpy as np

from gpu.numba_cpu.attention import exp32  # the float32 exp polynomial: vectorises

f32 = np.float32  # every constant float32, so that nothing promotes to float64
P = [f32(c) for c in (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                      -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                      -1.60960333262415e-02)]
Q = [f32(c) for c in (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                      -7.37332916720468e-03, -1.42647390514189e-02)]
P0, P1, P2, P3, P4, P5, P6 = P
Q0, Q1, Q2, Q3, Q4 = Q
ZERO, HALF, ONE, TWO, FOUR, EIGHTY = (f32(0.0), f32(0.5), f32(1.0), f32(2.0), f32(4.0),
                                      f32(80.0))
SQRT_HALF = f32(math.sqrt(0.5))
INV_SQRT_2PI = f32(1.0 / math.sqrt(2.0 * math.pi))
SQRT_2_OVER_PI = f32(math.sqrt(2.0 / math.pi))
C3, C3_GRAD = f32(0.044715), f32(3.0 * 0.044715)

# LLVM may contract a * b + c into one fused multiply-add. Not "arcp"/"afn": their
# approximate reciprocals cost up to 3e-6 relative error in p / q. Not "nnan"/"ninf":
# a nan must come out as nan, so that training can stop on it.
FLAGS = {"contract", "nsz"}

MIN_SIZE = 1 << 14  # below this, starting threads costs more than the loop saves


@numba.njit(fastmath=FLAGS, inline="always")
def erf32(z):
    """erf(z) as z P(z^2) / Q(z^2) on [-4, 4], where float32 erf has reached +-1."""
    z = min(max(z, -FOUR), FOUR)
    z2 = z * z
    p = ((((((P0 * z2 + P1) * z2 + P2) * z2 + P3) * z2 + P4) * z2 + P5) * z2 + P6) * z
    q = (((Q0 * z2 + Q1) * z2 + Q2) * z2 + Q3) * z2 + Q4
    return p / q


@numba.njit(fastmath=FLAGS, inline="always")
def sigmoid32(v):
    """1 / (1 + exp(-v)), v clamped to [-80, 80] so that exp stays finite in float32."""
    v = min(max(v, -EIGHTY), EIGHTY)
    return ONE / (ONE + exp32(-v))


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def gelu_forward(x):
    """0.5 x (1 + erf(x / sqrt 2)), elementwise."""
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in numba.prange(flat.size):
        v = flat[i]
        out[i] = HALF * v * (ONE + erf32(v * SQRT_HALF))
    return out.reshape(x.shape)


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def gelu_backward(g, x):
    """g * (Phi(x) + x phi(x)), elementwise."""
    fx, fg = x.ravel(), g.ravel()
    out = np.empty_like(fx)
    for i in numba.prange(fx.size):
        v = fx[i]
        cdf = HALF * (ONE + erf32(v * SQRT_HALF))
        out[i] = fg[i] * (cdf + v * INV_SQRT_2PI * exp32(-HALF * v * v))
    return out.reshape(x.shape)


# The tanh form through s = sigmoid(2u), since 0.5 (1 + tanh u) = s and 1 - tanh^2 u =
# 4 s (1 - s): no 1 + tanh(u) cancelling to nothing for very negative x.
@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def gelu_tanh_forward(x):
    """0.5 x (1 + tanh(u)) = x sigmoid(2u),  u = sqrt(2/pi) (x + 0.044715 x^3)."""
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in numba.prange(flat.size):
        v = flat[i]
        out[i] = v * sigmoid32(TWO * SQRT_2_OVER_PI * (v + C3 * v * v * v))
    return out.reshape(x.shape)


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def gelu_tanh_backward(g, x):
    """g * (s + 2 x s (1 - s) du/dx),  s = sigmoid(2u),  du/dx = sqrt(2/pi) (1 + 3c x^2)."""
    fx, fg = x.ravel(), g.ravel()
    out = np.empty_like(fx)
    for i in numba.prange(fx.size):
        v = fx[i]
        s = sigmoid32(TWO * SQRT_2_OVER_PI * (v + C3 * v * v * v))
        du = SQRT_2_OVER_PI * (ONE + C3_GRAD * v * v)
        out[i] = fg[i] * (s + TWO * v * s * (ONE - s) * du)
    return out.reshape(x.shape)


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def silu_forward(x):
    """x sigmoid(x), elementwise, with the reference's overflow-free sigmoid: e = exp(-|x|),
    1 / (1 + e) for x >= 0 and e / (1 + e) below."""
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in numba.prange(flat.size):
        v = flat[i]
        e = exp32(-abs(v))
        out[i] = v * (ONE / (ONE + e) if v >= ZERO else e / (ONE + e))
    return out.reshape(x.shape)


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def silu_backward(g, x):
    """g * (s + x s (1 - s)),  s = sigmoid(x), elementwise."""
    fx, fg = x.ravel(), g.ravel()
    out = np.empty_like(fx)
    for i in numba.prange(fx.size):
        v = fx[i]
        e = exp32(-abs(v))
        s = ONE / (ONE + e) if v >= ZERO else e / (ONE + e)
        out[i] = fg[i] * (s + v * s * (ONE - s))
    return out.reshape(x.shape)


def applies(*arrays):
    """Use a kernel: large, C-contiguous float32 NumPy arrays of one shape."""
    a = arrays[0]
    return (type(a) is np.ndarray and a.dtype == np.float32 and a.size >= MIN_SIZE
            and all(type(b) is np.ndarray and b.dtype == np.float32 and b.shape == a.shape
                    and b.flags.c_contiguous for b in arrays))
