"""Row-wise softmax, log-softmax and cross-entropy as parallel Numba loops, float32, CPU.

The references are the primitives in autograd/ops/nn.py: whole-array NumPy code, one
thread, each step a full pass that writes a temporary as large as the input,

    log_softmax(x) = (x - m) - log(sum(exp(x - m)))      m = the row's max

four passes and three temporaries; cross-entropy's forward is log_softmax and then a
gather, its backward a softmax and two more passes. A language model's head makes these
arrays the largest of a step: (B T, V) = (2048, 8192) floats, 64 MB each, for the GPT-2 of
benchmarks/side_by_side_training.py. Here a row is one task of a `prange`, read twice (its
max; then its sum of exponentials) and written once, on every core, and the
cross-entropy's forward writes nothing but one loss a row:

    lse_i     = m_i + log sum_c exp(x_ic - m_i)
    loss_i    = lse_i - (1 - eps) x_i,t_i - eps mean_c x_ic        (eps: label smoothing)
    dloss_i/dx_ic = softmax_ic - eps / C - (1 - eps) [c == t_i]

(-log p_ic = lse_i - x_ic, so the smoothed term eps mean_c(-log p_ic) is eps (lse_i -
mean_c x_ic).) The exponential is attention.py's `exp32` (a polynomial that vectorises,
3e-7 relative), summed in float64 so that a row of 50,000 classes loses nothing to
float32 rounding. A nan anywhere in a row makes its results nan, as in the reference.

Only float32 arrays of at least MIN_SIZE elements come here; float64 (gradient checks)
always takes the exact reference. `python benchmarks/bench_kernels.py` times both.
"""

import math

import numba
import numpy as np

from gpu.numba_cpu.attention import exp32  # the same float32 exp as the attention kernel

f32 = np.float32
ONE = f32(1.0)
NEG_INF = f32(-np.inf)

# attention.py's flags: fused multiply-adds, sums that may be regrouped (to vectorise),
# nothing that would turn a nan into a number.
FLAGS = {"contract", "nsz", "reassoc"}

MIN_SIZE = 1 << 14  # below this, starting threads costs more than the loop saves


@numba.njit(fastmath=FLAGS, inline="always")
def row_max(row):
    """The row's largest value. A nan is skipped here, but exp(nan - m) makes the sum nan
    after it, so a row holding one still ends nan (as in the reference, whose max is nan)."""
    m = NEG_INF
    for j in range(row.size):
        if row[j] > m:
            m = row[j]
    return m


@numba.njit(fastmath=FLAGS, inline="always")
def row_lse(row):
    """(m, lse) of a row: its max and log sum exp, both float32."""
    m = row_max(row)
    total = 0.0  # float64
    for j in range(row.size):
        total += exp32(row[j] - m)
    return m, f32(m + math.log(total))


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def softmax_forward_rows(x):
    """softmax over the last axis of a 2D array (N, C)."""
    N, C = x.shape
    out = np.empty_like(x)
    for i in numba.prange(N):
        m = row_max(x[i])
        total = 0.0
        for j in range(C):
            e = exp32(x[i, j] - m)
            out[i, j] = e
            total += e
        inv = f32(1.0 / total)
        for j in range(C):
            out[i, j] *= inv
    return out


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def softmax_backward_rows(g, s):
    """s (g - sum_c g_c s_c) a row: the VJP of softmax from its output s."""
    N, C = s.shape
    out = np.empty_like(s)
    for i in numba.prange(N):
        dot = 0.0
        for j in range(C):
            dot += g[i, j] * s[i, j]
        d = f32(dot)
        for j in range(C):
            out[i, j] = s[i, j] * (g[i, j] - d)
    return out


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def log_softmax_forward_rows(x):
    """x - lse a row, (N, C)."""
    N, C = x.shape
    out = np.empty_like(x)
    for i in numba.prange(N):
        m, lse = row_lse(x[i])
        for j in range(C):
            out[i, j] = x[i, j] - lse
    return out


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def log_softmax_backward_rows(g, out):
    """g - exp(out) sum_c g_c a row: the VJP of log_softmax from its output."""
    N, C = out.shape
    grad = np.empty_like(out)
    for i in numba.prange(N):
        total = 0.0
        for j in range(C):
            total += g[i, j]
        t = f32(total)
        for j in range(C):
            grad[i, j] = g[i, j] - exp32(out[i, j]) * t
    return grad


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def cross_entropy_forward_rows(x, targets, eps):
    """One loss a row: lse - (1 - eps) x[t] - eps mean(x). targets (N,) valid class ids."""
    N, C = x.shape
    loss = np.empty(N, dtype=np.float32)
    for i in numba.prange(N):
        m, lse = row_lse(x[i])
        value = lse - (ONE - eps) * x[i, targets[i]]
        if eps != 0:
            total = 0.0
            for j in range(C):
                total += x[i, j]
            value -= eps * f32(total / C)
        loss[i] = value
    return loss


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def cross_entropy_backward_rows(x, targets, weight, eps):
    """weight_i (softmax(x_i) - eps / C - (1 - eps) onehot(t_i)) a row, (N, C)."""
    N, C = x.shape
    grad = np.empty_like(x)
    smooth = eps / f32(C)
    for i in numba.prange(N):
        w = weight[i]
        m, lse = row_lse(x[i])
        for j in range(C):
            grad[i, j] = (exp32(x[i, j] - lse) - smooth) * w
        grad[i, targets[i]] -= (ONE - eps) * w
    return grad


# --- the callers' side: any (..., C) array, rows on the last axis ---------------------------


def rows(a):
    """`a` as a C-contiguous, writable (N, C) array: one compiled version of each kernel."""
    return np.require(a, requirements=("C", "W")).reshape(-1, a.shape[-1])


def flat(a, dtype):
    """A per-row argument (targets, weights) as a contiguous (N,) array of `dtype`."""
    return np.ascontiguousarray(np.asarray(a).ravel(), dtype=dtype)


def softmax_forward(x):
    return softmax_forward_rows(rows(x)).reshape(x.shape)


def softmax_backward(g, out):
    return softmax_backward_rows(rows(g), rows(out)).reshape(out.shape)


def log_softmax_forward(x):
    return log_softmax_forward_rows(rows(x)).reshape(x.shape)


def log_softmax_backward(g, out):
    return log_softmax_backward_rows(rows(g), rows(out)).reshape(out.shape)


def cross_entropy_forward(logits, safe, label_smoothing):
    """(...) losses of logits (..., C) at the classes `safe` (...), as
    autograd.ops.nn.cross_entropy_reference."""
    loss = cross_entropy_forward_rows(rows(logits), flat(safe, np.int64), f32(label_smoothing))
    return loss.reshape(safe.shape)


def cross_entropy_backward(logits, safe, weight, label_smoothing):
    """dL/dlogits (..., C), as autograd.ops.nn.cross_entropy_grad_reference."""
    grad = cross_entropy_backward_rows(rows(logits), flat(safe, np.int64),
                                       flat(weight, np.float32), f32(label_smoothing))
    return grad.reshape(logits.shape)


def applies(axis, *arrays):
    """Use a kernel: the last axis, large float32 NumPy arrays of one shape."""
    a = arrays[0]
    return (axis in (-1, a.ndim - 1) and type(a) is np.ndarray and a.dtype == np.float32
            and a.ndim >= 1 and a.size >= MIN_SIZE and a.shape[-1] > 0
            and all(type(b) is np.ndarray and b.dtype == np.float32 and b.shape == a.shape
                    for b in arrays))
