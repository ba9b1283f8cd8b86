"""Rotary position embedding (RoPE) forward and backward as parallel Numba loops, float32, CPU.

The reference is `rotary_reference` (and `rotary_grad_reference`) in npplm.layers.rotary:
    rope(x) = x * cos + rotate_half(x) * sin,      rotate_half([x1, x2]) = [-x2, x1]
    dx      = g * cos + rotate_half^T(g * sin),    rotate_half^T([y1, y2]) = [y2, -y1]
in whole-array NumPy: a negated copy of each half, a concatenation, two products and a sum,
five passes over (B, H, T, D) and as many temporaries, each way. Here each pair
(x_j, x_{j + D/2}) of a row is read once and written once:

    out_j         = x_j cos_j - x_{j+D/2} sin_j
    out_{j+D/2}   = x_{j+D/2} cos_{j+D/2} + x_j sin_{j+D/2}
    dx_j          = g_j cos_j + g_{j+D/2} sin_{j+D/2}
    dx_{j+D/2}    = g_{j+D/2} cos_{j+D/2} - g_j sin_j

each element the same two products and one sum as the reference, in the same order, and no
fused multiply-adds (no fastmath at all: nothing here is a reduction to regroup), so the
kernel's results equal the reference's bit for bit, and a nan stays a nan.

Layouts. x (and g) may have any strides. LLaMA's q and k are views: (B, T, H D) reshaped
and transposed to (B, H, T, D), not contiguous; the kernel reads such a view in place, as
the C-contiguous (B, T, H, D) array it is a transpose of (`time_major`); any other strided
x is copied first (Numba's loops over a general strided view ran 3x slower than over a
contiguous array: slower than a copy plus the contiguous kernel). The result is
a C-contiguous (B, H, T, D) array, which the attention kernel then takes without a copy.
cos and sin come as (T, D), one table for every sequence, or (B, T, D), one per sequence
(left-padded batches), which the reference broadcasts as (B, 1, T, D): the same angles for
every head. One (B H T) row of D elements is one task of a `prange`.

Only float32 arrays of at least MIN_SIZE elements come here; float64 (gradient checks)
always takes the reference. `python benchmarks/bench_kernels.py` times both on a LLaMA-sized
q, B=8, H=9, T=256, D=64 (SmolLM2-135M's heads), a strided view of its projection, forward +
backward: on the 2-core CI-sized machine, shared, medians of 9 (three runs), 2026-12-03, it
went from 3.6-5.0 ms to 1.1-1.8 ms on 2 threads (2.8x to 3.8x), 4.5 -> 2.7 ms on 1. RoPE is
a small part of a LLaMA step either way (the GEMMs around it dominate); what the fusion
also buys is one graph node instead of six, and no (B, H, T, D) temporaries.
"""

import numba
import numpy as np

# Below this, starting threads costs more than the loop saves. The reference is cheap here
# (about 1.5 ns an element, memory-bound), and a parallel launch costs some 50 us: on the
# 2-core machine the kernel lost at SmolLM2's prefill q, (1, 9, 64, 64) (62 us against the
# reference's 48), broke even at 74K elements, and won from 147K (147 us against 180).
MIN_SIZE = 1 << 17


@numba.njit(parallel=True, cache=True)
def forward_rows(x, cos, sin, time_major):
    """rope(x) (B, H, T, D) from x (B, H, T, D), or (B, T, H, D) if time_major (LLaMA's
    q and k before their transpose), and cos, sin (1 or B, T, D)."""
    if time_major:
        B, T, H, D = x.shape
    else:
        B, H, T, D = x.shape
    half = D // 2
    per_sequence = cos.shape[0] > 1  # (B, T, D) tables, else one (1, T, D) for all
    out = np.empty((B, H, T, D), dtype=np.float32)
    for row in numba.prange(B * H * T):
        b, h, t = row // (H * T), (row // T) % H, row % T
        bc = b if per_sequence else 0
        xr = x[b, t, h] if time_major else x[b, h, t]
        c, s, o = cos[bc, t], sin[bc, t], out[b, h, t]
        for j in range(half):
            x1, x2 = xr[j], xr[j + half]
            o[j] = x1 * c[j] - x2 * s[j]
            o[j + half] = x2 * c[j + half] + x1 * s[j + half]
    return out


@numba.njit(parallel=True, cache=True)
def backward_rows(g, cos, sin, time_major):
    """dx = g cos + rotate_half^T(g sin) (B, H, T, D): the VJP of `forward_rows`."""
    if time_major:
        B, T, H, D = g.shape
    else:
        B, H, T, D = g.shape
    half = D // 2
    per_sequence = cos.shape[0] > 1
    dx = np.empty((B, H, T, D), dtype=np.float32)
    for row in numba.prange(B * H * T):
        b, h, t = row // (H * T), (row // T) % H, row % T
        bc = b if per_sequence else 0
        gr = g[b, t, h] if time_major else g[b, h, t]
        c, s, d = cos[bc, t], sin[bc, t], dx[b, h, t]
        for j in range(half):
            g1, g2 = gr[j], gr[j + half]
            d[j] = g1 * c[j] + g2 * s[j + half]
            d[j + half] = g2 * c[j + half] - g1 * s[j]
    return dx


def table(a):
    """A cos or sin table as a C-contiguous (1 or B, T, D) array (small: T D or B T D)."""
    a = np.ascontiguousarray(a)
    return a[None] if a.ndim == 2 else a


def rows(x):
    """(x as a C-contiguous array, time_major): x (B, H, T, D) itself if C-contiguous; its
    (B, T, H, D) transpose if that is (a view of a (B, T, H D) projection, read in place);
    else a C-contiguous copy (see the module docstring). Numba then compiles one layout."""
    if x.flags.c_contiguous:
        return x, False
    xt = x.transpose(0, 2, 1, 3)  # (B, H, T, D) -> (B, T, H, D)
    if xt.flags.c_contiguous:
        return xt, True
    return np.ascontiguousarray(x), False


def rotary_forward(x, cos, sin):
    """rope(x), C-contiguous (B, H, T, D) float32; x (B, H, T, D) any strides."""
    x, time_major = rows(x)
    return forward_rows(x, table(cos), table(sin), time_major)


def rotary_backward(g, cos, sin):
    """dL/dx of `rotary_forward` given g = dL/d(out), C-contiguous (B, H, T, D) float32."""
    g, time_major = rows(g)
    return backward_rows(g, table(cos), table(sin), time_major)


def applies(x, cos, sin):
    """Use the kernel: a large float32 NumPy x (B, H, T, D), D even, any strides, and
    float32 NumPy tables cos, sin of one shape, (T, D) or (1 or B, T, D)."""
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 4
            and x.size >= MIN_SIZE and x.shape[-1] % 2 == 0):
        return False
    B, _, T, D = x.shape
    return (all(type(a) is np.ndarray and a.dtype == np.float32 for a in (cos, sin))
            and cos.shape == sin.shape
            and (cos.shape == (T, D) or (cos.ndim == 3 and cos.shape[0] in (1, B)
                                         and cos.shape[1:] == (T, D))))
