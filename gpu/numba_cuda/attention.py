"""Causal self-attention forward and backward as Numba CUDA kernels, float32.

The reference is `causal_attention_reference` (and its `_grad_`) in npplm.layers.attention:
softmax(q k^T * scale + bias) v with the dense (B, 1, T, S) causal + padding bias, and
each query row's log-sum-exp. gpu/numba_cpu/attention.py does the same on the CPU, with the
same signatures and the same handling of the edge cases below; its docstring derives the
backward in full.

Like FlashAttention (Dao et al., "FlashAttention: Fast and Memory-Efficient Exact Attention
with IO-Awareness", arXiv:2205.14135), the kernels follow the mask instead of writing it
out: query t, at absolute position t + S - T (after S - T cached keys), scores only the
keys 0 .. t + S - T whose `keep` is true, and no (B, H, T, S) array of scores or
probabilities is ever stored. The forward keeps one number a row, the log-sum-exp
lse_t = log sum_s exp(x_ts) of its scores x_ts = q_t . k_s * scale, and the backward
recomputes p_ts = exp(x_ts - lse_t) from it.

This is the plain form of the algorithm, written to be read rather than tuned: one CUDA
thread per query row (b, h, t), walking that row's keys in order. (FlashAttention proper
gives a block of rows to a thread block and stages tiles of k and v in shared memory; that
is the next step, for whoever has a GPU to measure it on.)

Forward, per query row: an online ("running max") softmax over the keys, so that one pass
reads each key and value once and never holds a row of scores. With m the largest score
so far, l = sum exp(x - m) and a = sum exp(x - m) v_s, a new score x does

    x <= m:  l += exp(x - m),                    a += exp(x - m) v_s
    x >  m:  l = l exp(m - x) + 1,               a = a exp(m - x) + v_s,     m = x

and at the end out_t = a / l, lse_t = m + log l. The D accumulators of `a` sit in a
per-thread local array of MAX_HEAD_DIM floats, so D may be at most that.

Backward, per query row t, with dO_t = dL/dO_t and g_t = dL/dlse_t (zero unless the lse
output is used):

    Delta_t = dO_t . O_t - g_t                  (= sum_s p_ts dP_ts - g_t)
    dP_ts   = dO_t . v_s
    dX_ts   = p_ts (dP_ts - Delta_t)
    dq_t    = scale sum_s dX_ts k_s,   dk_s += scale dX_ts q_t,   dv_s += p_ts dO_t

The thread of row t owns dq_t, but every query reading key s adds into dk_s and dv_s, so
those sums use `cuda.atomic.add`. Float atomics complete in whatever order the threads
reach them, and float addition is not associative: on a GPU the last bits of dk and dv may
differ from run to run, which is why the tests compare with a tolerance. dq and the
forward add in a fixed order and are the same on every run.

Masked rows. A query row with no key to read (a left-padding position of a causal model,
or with S < T a query before the first key) gets what the dense bias gives it: its scores
are then all the same float32 minimum, so its softmax is uniform over all S keys. The
kernels reproduce that, p = 1/S over every key and lse = the float32 minimum (the float32
reference's value: log S is far below that number's last bit), as the CPU kernel does, so
outputs and gradients equal the reference's on padding rows too.

No benchmark: this was written without a GPU, tested on Numba's CUDA simulator, and only
compiled (to PTX for sm_90, float32 throughout) for a real device, never run on one.
"""

import math

import numba
import numpy as np
from numba import cuda

from autograd.backend import array_module
from gpu.numba_cuda import THREADS, float32_cupy

f32 = numba.float32
MIN32 = np.float32(np.finfo(np.float32).min)  # the dense bias' "masked" value
NEG_INF = np.float32(-np.inf)

# The most head dimensions a query row may have: the size of each thread's accumulator
# array (GPT-2's heads have D = 64, LLaMA's 128); 256 leaves room, at 1 KB a thread.
MAX_HEAD_DIM = 256


@cuda.jit(device=True)
def row_of(n, H, T):
    """(b, h, t) of thread n, for n = (b H + h) T + t."""
    return n // (H * T), (n // T) % H, n % T


@cuda.jit(device=True)
def dot(x, y, b, h, i, j):
    """x[b, h, i] . y[b, h, j], over the head axis."""
    s = f32(0.0)
    for d in range(x.shape[3]):
        s += x[b, h, i, d] * y[b, h, j, d]
    return s


@cuda.jit(device=True)
def causal_keys(t, T, S):
    """How many leading keys query t reads: 0 .. t + S - T, none if that is below 0.

    (Not min(t + S - T + 1, S): Numba 0.68's CUDA target fails to type the builtin min.)
    """
    n = t + S - T + 1
    return n if n < S else S


@cuda.jit(device=True)
def reads_a_key(keep, b, n_keys):
    """Whether any of keys 0 .. n_keys - 1 of batch row b is kept."""
    for s in range(n_keys):
        if keep[b, s]:
            return True
    return False


@cuda.jit
def forward_rows(q, k, v, keep, scale, out, lse):
    """out (B, H, T, D), lse (B, H, T) for one query row a thread (see above)."""
    B, H, T, D = q.shape
    S = k.shape[2]
    n = cuda.grid(1)
    if n >= B * H * T:
        return
    b, h, t = row_of(n, H, T)
    n_keys = causal_keys(t, T, S)
    acc = cuda.local.array(MAX_HEAD_DIM, numba.float32)
    for d in range(D):
        acc[d] = f32(0.0)
    m = NEG_INF  # the running max of the scores
    total = f32(0.0)  # sum_s exp(x_s - m)
    for s in range(n_keys):
        if not keep[b, s]:
            continue
        x = dot(q, k, b, h, t, s) * scale
        if x > m:  # a new max: rescale what is summed so far (exp(-inf) = 0 the first time)
            c = math.exp(m - x)
            total = total * c + f32(1.0)
            for d in range(D):
                acc[d] = acc[d] * c + v[b, h, s, d]
            m = x
        else:  # also a nan score, which makes the row nan
            e = math.exp(x - m)
            total += e
            for d in range(D):
                acc[d] += e * v[b, h, s, d]
    if total == f32(0.0):  # no key read: uniform over all S keys, as the dense bias gives
        for d in range(D):
            a = f32(0.0)
            for s in range(S):
                a += v[b, h, s, d]
            out[b, h, t, d] = a / f32(S)
        lse[b, h, t] = MIN32
        return
    for d in range(D):
        out[b, h, t, d] = acc[d] / total
    lse[b, h, t] = m + math.log(total)


@cuda.jit
def backward_rows(g, g_lse, q, k, v, keep, y, lse, scale, dq, dk, dv):
    """dq for one query row a thread, and its terms of dk and dv added atomically."""
    B, H, T, D = q.shape
    S = k.shape[2]
    n = cuda.grid(1)
    if n >= B * H * T:
        return
    b, h, t = row_of(n, H, T)
    n_keys = causal_keys(t, T, S)
    reads = reads_a_key(keep, b, n_keys)
    if not reads:
        n_keys = S  # a row that reads nothing: p = 1/S on every key
    row_lse = lse[b, h, t]
    delta = dot(g, y, b, h, t, t) - g_lse[b, h, t]  # dO_t . O_t - dL/dlse_t
    acc = cuda.local.array(MAX_HEAD_DIM, numba.float32)
    for d in range(D):
        acc[d] = f32(0.0)
    for s in range(n_keys):
        if reads:
            if not keep[b, s]:
                continue
            p = math.exp(dot(q, k, b, h, t, s) * scale - row_lse)
        else:
            p = f32(1.0) / f32(S)
        dp = dot(g, v, b, h, t, s)  # dP_ts = dO_t . v_s
        dx = scale * p * (dp - delta)  # scale * dX_ts
        for d in range(D):
            acc[d] += dx * k[b, h, s, d]
            cuda.atomic.add(dk, (b, h, s, d), dx * q[b, h, t, d])
            cuda.atomic.add(dv, (b, h, s, d), p * g[b, h, t, d])
    for d in range(D):
        dq[b, h, t, d] = acc[d]


def launch(kernel, n_rows, *args):
    """kernel over n_rows threads, THREADS a block, on the default stream."""
    if n_rows > 0:
        kernel[(n_rows + THREADS - 1) // THREADS, THREADS](*args)


def check_head_dim(D):
    if D > MAX_HEAD_DIM:
        raise ValueError(f"the CUDA attention kernel takes head dimensions up to "
                         f"MAX_HEAD_DIM = {MAX_HEAD_DIM}, not D = {D}")


# --- wrappers: the signatures of gpu/numba_cpu/attention.py ---------------------------------


def applies(q, k, v):
    """Use these kernels: float32 CuPy arrays, k and v alike, as many rows and heads as q
    (grouped-query heads are repeated before attention)."""
    return float32_cupy(q, k, v) and k.shape == v.shape and k.shape[:2] == q.shape[:2]


def attention_forward(q, k, v, keep, scale):
    """(out (B, H, T, D), lse (B, H, T)) of causal attention; see the module docstring.

    q (B, H, T, D), k and v (B, H, S, D) float32 arrays (any strides), keep (B, S) bool:
    False for a padding key.
    """
    B, H, T, D = q.shape
    check_head_dim(D)
    xp = array_module(q)
    q, k, v = (xp.ascontiguousarray(a) for a in (q, k, v))
    keep = xp.ascontiguousarray(keep, dtype=bool)
    out = xp.empty((B, H, T, D), dtype=np.float32)
    lse = xp.empty((B, H, T), dtype=np.float32)
    launch(forward_rows, B * H * T, q, k, v, keep, np.float32(scale), out, lse)
    return out, lse


def attention_backward(g, g_lse, q, k, v, keep, out, lse, scale):
    """(dq, dk, dv) of `attention_forward` given g = dL/dout and g_lse = dL/dlse."""
    B, H, T, D = q.shape
    check_head_dim(D)
    xp = array_module(q)
    g, g_lse, q, k, v, out, lse = (xp.ascontiguousarray(a)
                                   for a in (g, g_lse, q, k, v, out, lse))
    keep = xp.ascontiguousarray(keep, dtype=bool)
    dq = xp.empty((B, H, T, D), dtype=np.float32)
    dk = xp.zeros(k.shape, dtype=np.float32)  # summed into by every query that reads a key
    dv = xp.zeros(v.shape, dtype=np.float32)
    launch(backward_rows, B * H * T, g, g_lse, q, k, v, keep, out, lse, np.float32(scale),
           dq, dk, dv)
    return dq, dk, dv
