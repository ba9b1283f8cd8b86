"""The AdamW update and the global gradient norm as parallel Numba loops, float32, CPU.

The references are `adamw_update_reference` and `sum_of_squares_reference` in
npplm.training.optim: whole-array NumPy code on one thread. The AdamW update is about ten
passes over a parameter, its gradient and its two moments (each of `m *= b1`,
`m += (1 - b1) * g`, `xp.sqrt(v)`, ... reads and writes a whole array, and half of them
write a temporary as large: (1 - b1) g, g g, sqrt(v), m / denom, ...); the norm casts
every gradient to a float64 copy, squares it into another and sums that. Here each is one
pass over the data, on every core.

AdamW, per element, with the scalars rounded to float32 once, as NumPy rounds a Python
float that meets a float32 array:

    p <- p * (1 - lr wd)
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) (g g)
    p <- p - step_size (m / (sqrt(v) / sqrt(1 - b2^t) + eps))     step_size = lr / (1 - b1^t)

every operation in the reference's order, each result rounded to float32 as the
reference rounds it, and no fast-math flags: no fused multiply-add, no reciprocal in place
of a division. So the kernel's parameters and moments equal the reference's bit for bit
(tests/gpu/test_optim_kernel.py checks exact equality), and stay within float32 rounding
of torch.optim.AdamW's, whose `lerp` and `addcmul` round in other places.

The norm: ||g||^2 = sum of g_i^2 over every gradient, each square and sum in float64.
A gradient is cut into fixed chunks of CHUNK elements; each chunk's sum is one task of a
`prange`, and the partial sums are added in chunk order by one thread. The partition and
every order of addition depend on the array's size only, never on the number of threads,
so the norm, and a resumed run's losses after it, are the same on 1 thread or 16. It is
not bit-identical to the reference's (NumPy sums pairwise, in blocks of its own), only to
float64 rounding, about 1e-15 relative. A nan or inf in a gradient makes the norm nan or
inf, as in the reference: the trainer stops on that.

Only C-contiguous float32 NumPy arrays of at least MIN_SIZE elements come here; smaller
ones (biases, LayerNorm gains), float64 (the exact tests against torch) and CuPy arrays
take the reference (about 0.4 ms of a GPT-2 6L/384 step for its 50 vectors). The
gradients' scaling by min(1, max_norm / ||g||) stays NumPy's `g *= scale`: that is
already one vectorised pass, and a Numba loop was no faster (2.5 ms vs 5.0 ms for 13.9M
floats).

`python benchmarks/bench_kernels.py` times both on the parameters of
benchmarks/bench_training.py's GPT-2 6L/384 (13.9M float32 parameters); on the 2-core
CI-sized machine, 2026-12-03, shared with other jobs, medians of 9 (two runs each):
AdamW.step 40-45 ms -> 13-19 ms (2.1x to 3.1x), clip_grad_norm 15-17 ms -> 8-9 ms (2x)
on 2 threads, and the same on 1 (AdamW 38-47 -> 11-14 ms): the fused update is bound by
memory bandwidth (7 floats read or written an element), not by arithmetic, so the gain
is the nine passes saved more than the second core.
"""

import math

import numba
import numpy as np

f32 = np.float32

# The norm's partial sums may be regrouped and fused (so that a chunk's loop vectorises):
# the compiled order is fixed, whatever the thread count. Not "nnan"/"ninf": a nan must
# reach the norm. The AdamW update takes no flags at all (exact float32 rounding).
FLAGS = {"contract", "nsz", "reassoc"}

MIN_SIZE = 1 << 14  # below this, starting threads costs more than the loop saves
CHUNK = 1 << 15  # elements per partial sum of the norm: fixed, so its order of sums is too


@numba.njit(parallel=True, cache=True)
def adamw_kernel(p, g, m, v, decay, b1, one_minus_b1, b2, one_minus_b2, step_size,
                 bias_correction2_sqrt, eps):
    """One AdamW update in place on 1D float32 arrays p, m, v (g: the gradient); every
    scalar a float32, so that nothing promotes to float64."""
    for i in numba.prange(p.size):
        gi = g[i]
        mi = m[i] * b1 + one_minus_b1 * gi
        vi = v[i] * b2 + one_minus_b2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        denom = math.sqrt(vi) / bias_correction2_sqrt + eps
        p[i] = p[i] * decay - step_size * (mi / denom)


def adamw_update(p, g, m, v, lr, betas, eps, weight_decay, t):
    """The kernel behind `adamw_update_reference`'s signature: the same Python-float
    scalars, rounded to float32 where the reference's NumPy rounds them."""
    b1, b2 = betas
    adamw_kernel(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                 f32(1.0 - lr * weight_decay), f32(b1), f32(1.0 - b1), f32(b2), f32(1.0 - b2),
                 f32(lr / (1.0 - b1**t)), f32(math.sqrt(1.0 - b2**t)), f32(eps))


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def sum_of_squares_kernel(g):
    """sum g_i^2 in float64 over a 1D float32 array, chunk by chunk (see the docstring)."""
    n_chunks = (g.size + CHUNK - 1) // CHUNK
    partial = np.empty(n_chunks)  # float64
    for c in numba.prange(n_chunks):
        # A slice, so that the inner loop's index starts at 0: Numba then knows it is never
        # negative, drops its wraparound check, and LLVM vectorises the loop (15x faster).
        chunk = g[c * CHUNK:(c + 1) * CHUNK]
        total = 0.0
        for i in range(chunk.size):
            x = np.float64(chunk[i])
            total += x * x
        partial[c] = total
    total = 0.0
    for c in range(n_chunks):  # one thread, in chunk order
        total += partial[c]
    return total


def sum_of_squares(g):
    """sum(g ** 2) in float64, a Python float, as `sum_of_squares_reference` returns."""
    return float(sum_of_squares_kernel(g.reshape(-1)))


def applies(*arrays):
    """Use a kernel: large, C-contiguous float32 NumPy arrays of one shape."""
    a = arrays[0]
    return (type(a) is np.ndarray and a.dtype == np.float32 and a.size >= MIN_SIZE
            and all(type(b) is np.ndarray and b.dtype == np.float32 and b.shape == a.shape
                    and b.flags.c_contiguous for b in arrays))
