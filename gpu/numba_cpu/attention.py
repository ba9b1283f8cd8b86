"""Causal self-attention forward and backward as parallel Numba loops, float32, CPU.

The reference is `causal_attention_reference` (and its `_grad_`) in npplm.layers.attention:
the dense math of every family's attention core, softmax(q k^T * scale + bias) v, with the
bias a (B, 1, T, S) array holding 0 where a query may read a key and float32's most
negative value where not. It computes all T x S scores, and as many probabilities,
although a causal mask throws away half of them, and the backward keeps them all.

Here the work follows the mask, as FlashAttention does (Dao et al., "FlashAttention: Fast
and Memory-Efficient Exact Attention with IO-Awareness", arXiv:2205.14135):

  - query t (at absolute position t + S - T, after S - T cached keys) computes scores only
    for keys 0 .. t + S - T, the lower triangle: about half the work at S = T;
  - the probabilities are never stored. The forward keeps one number a row, the
    log-sum-exp lse_t = log sum_s exp(x_ts) of its scores x_ts = q_t . k_s * scale, and the
    backward recomputes p_ts = exp(x_ts - lse_t) block by block.

FlashAttention also splits the keys of a row into blocks with a running ("online") max and
sum, because a GPU's shared memory cannot hold a row of scores. A CPU's L1 cache holds one
easily (S floats a row, 1 KB at S = 256), so each block of ROWS query rows computes its
rows of scores in full into a small scratch buffer, then an exact two-pass softmax: the
same numbers with less bookkeeping.

Backward, per query row t, with dO_t = dL/dO_t the incoming gradient and g_t = dL/dlse_t
(zero unless someone uses the lse output):

    dP_ts = dO_t . v_s                      (O_t = sum_s p_ts v_s)
    dX_ts = p_ts (dP_ts - Delta_t)          Delta_t = sum_s p_ts dP_ts - g_t
                                                    = dO_t . O_t - g_t
    dq_t  = scale sum_s dX_ts k_s,   dk_s += scale dX_ts q_t,   dv_s += p_ts dO_t

(the softmax VJP p (g - sum p g), with Delta read from the output instead of a sum over
the row). Each (batch, head) pair is one task of a `prange`; its query blocks run in order,
so the dk and dv rows that every later query adds to need no locks.

Padding keys (a (B, S) `keep` mask) are skipped like the masked triangle. A query row with
no key at all to read (a left-padding position of a causal model) gets what the dense bias
gives it: every score is then the same float32 minimum, so softmax is uniform over all S
keys. The kernel reproduces that (p = 1/S, lse = the float32 minimum) so that its output
and gradients equal the reference's everywhere, padding rows included.

Layout. The kernel reads q, k, v and the incoming gradient, and writes out, dq, dk and dv,
token by token, (B, T, H, D): the layout the projections produce and merge_heads reads, so
split_heads' (B, H, T, D) views go in and the outputs go back as views, with no copy
either way (q, k and v split from one fused projection, GPT-2's c_attn, are read in place
too: only their rows of D need be contiguous). Each (batch, head) pair is one task of a
`prange`; it transposes its own keys (and, backward, values) to (D, S) for the scores,
which run along the keys, and zeroes its own rows of dk and dv. Copying every operand to
(B H, T, D) and back had cost 8.5 of the 29.6 ms of a BERT-base layer's attention,
forward + backward (B=8, T=128, 2-core Intel VM, 2026-12-06).

Products. Every product (q k^T, P V, dO v^T, dX k, and dk, dv's sums over query rows) is
cut into tiles of 4 rows by WIDTH = 64 columns, `matmul_tile`: its 16 accumulators stay
in vector registers across the whole sum, each step two to four loads, four broadcasts
and 16 fused multiply-adds, about 76 GMAC/s on one core here, OpenBLAS's speed. Numba
code cannot say "keep this array in registers" (LLVM keeps a written array in memory, a
load and a store per multiply-add: the loops this replaced ran at a third of that), so the
tile is written in LLVM's vector instructions, an intrinsic, with its reference the
product it names (tested). The backward takes BLOCK = 32 query rows a step, so that dk
and dv add 32 rows' products per tile rather than 4. The softmax's exp is a polynomial
(`exp32`), not libm's expf, so that it vectorises, and sums may be reordered ("reassoc"),
so that the row sums vectorise too: the reference's BLAS reorders its sums as well. The
row's max is LLVM's maxnum (`maxnum32`): Python's max compiled to a compare and a branch
that stayed scalar, and took 1.4 of the forward's 5.6 ms on BERT-base's layer.

`python benchmarks/bench_kernels.py` times both on the attention of
benchmarks/side_by_side_training.py's GPT-2, B=8, H=6, T=S=256, D=64, float32, forward +
backward (causal, no padding); on the 2-core CI-sized machine, 2026-12-03, shared, medians
of 9 (three runs): 59 ms -> 37 ms on 2 threads (1.4x to 1.7x), 69 ms -> 49 ms on 1 (1.4x).
With the layout, the max and the tiles above (2-core Intel VM with AVX-512, 2026-12-06,
q, k and v as views of c_attn's output and dL/dout as merge_heads' VJP gives it, medians of
15, two runs each against the code before, 911435d): that shape 32.7-34.4 -> 16.5-16.7 ms
on 2 threads, and BERT-base's layer (B=8, H=12, T=S=128, D=64, every key kept) 31.2-33.0
-> 12.7-13.6 ms, where transformers' SDPA takes 10.8-12.3.
In the whole GPT-2 training step the gain is smaller, because OpenBLAS's idle threads spin
for about 0.1 s after each GEMM on the cores this kernel needs (gpu/numba_cpu/__init__.py):
alternating steps with and without it in one process, 2354 -> 2288 ms a step on 1 BLAS
thread, 1578 -> 1504 ms on 2 with OPENBLAS_THREAD_TIMEOUT=4, and no gain (1502 -> 1537 ms)
on 2 with OpenBLAS's default spin.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

f32 = np.float32
ZERO, HALF, ONE = f32(0.0), f32(0.5), f32(1.0)
MIN32 = f32(np.finfo(np.float32).min)  # the dense bias' "masked" value
NEG_INF = f32(-np.inf)

# gpu/numba_cpu/activations.py's flags plus "reassoc" (see above): no approximate
# reciprocals, and a nan stays a nan.
FLAGS = {"contract", "nsz", "reassoc"}

ROWS = 4  # query rows a block: each key and value row loaded once feeds 4 rows
BLOCK = 32  # query rows a backward step: dk and dv add up BLOCK rows' products at once

# exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split in
# two constants so that n ln 2 is exact), exp(r) = 1 + r + r^2 P(r) with Cephes' expf
# coefficients. Its largest relative error on [-87, 0] is 6e-8 evaluated in this order, and
# 3e-7 as compiled here, where "reassoc" lets LLVM regroup it (NumPy's float32 exp: 2e-7;
# checked in tests/gpu/test_attention_kernel.py): far below the float32 tolerances of the
# attention itself. libm's expf is one call an element, about 3.6 ns here, and was the
# slowest part of the kernel; this vectorises.
LOG2E = f32(1.0 / math.log(2.0))
LN2_HI, LN2_LO = f32(0.693359375), f32(-2.12194440e-4)
E = [f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                      1.6666665459e-1, 5.0000001201e-1)]
E0, E1, E2, E3, E4, E5 = E
EXP_LO, EXP_HI = f32(-87.33654), f32(88.72283)  # exp's float32 range: normal results


@intrinsic
def pow2_float32(typingctx, n):
    """2^n as a float32, for an int32 n in [-126, 127]: the IEEE-754 number whose exponent
    field is n + 127 and whose mantissa is 0, built by writing those bits."""

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(args[0], ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(fastmath=FLAGS, inline="always")
def exp32(x):
    """exp(x) in float32 without a libm call; 0 below -87.3 (so exp(-inf) = 0), nan at nan."""
    xc = min(max(x, EXP_LO), EXP_HI)
    n = np.floor(xc * LOG2E + HALF)  # float32 (math.floor would return an int64)
    r = xc - n * LN2_HI - n * LN2_LO
    p = ((((E0 * r + E1) * r + E2) * r + E3) * r + E4) * r + E5
    y = (p * r * r + r + ONE) * pow2_float32(np.int32(n))
    if x >= EXP_LO:
        return y
    return ZERO if x < EXP_LO else x  # below the range: 0; nan (neither): nan


@numba.njit(fastmath=FLAGS, inline="always")
def keys_of_row(i, offset, first, S):
    """How many leading keys query row i reads (causal: 0 .. i + offset), and whether it
    reads any: `first` is the batch row's first kept key (S if none)."""
    n = min(i + offset + 1, S)
    return n, first < n


LANES = 16  # float32 lanes of a 512-bit vector
VECTORS = 4  # vectors a row of a product tile
WIDTH = VECTORS * LANES  # columns of a product tile


@intrinsic
def matmul_tile(typingctx, a0, a1, a2, a3, b, c0, c1, c2, c3, m, n, K, accumulate):
    """c_r[:n] = sum_{k < K} a_r[k] b[k, :n] for the rows r < m (accumulate: +=), n <= WIDTH:
    a 4 x WIDTH tile of a product (ROWS, K) @ (K, n), its 4 VECTORS accumulators kept in
    vector registers across the whole sum.

        for r < m, j < n:  c_r[j] = (c_r[j] if accumulate else 0) + sum_k a_r[k] * b[k, j]

    a_r are four 1-D arrays (any stride: a row, or a column of a matrix), b a 2-D array
    whose rows are contiguous, c_r four contiguous 1-D arrays; rows r >= m are read but not
    written (pass a valid row for them). LLVM keeps an array that Numba code writes in a
    loop in memory, a load and a store every multiply-add; written here in LLVM's own
    vector instructions, each step is VECTORS loads of b's row, four broadcasts of a_r[k] and
    4 VECTORS fused multiply-adds (llvm.fma), the columns past n masked (llvm.masked.load and
    .store). On a CPU with narrower vectors than 512 bits (AVX2) LLVM splits each into
    two or four. tests/gpu/test_attention_kernel.py checks it against the product it
    computes.
    """
    arrays = (a0, a1, a2, a3, b, c0, c1, c2, c3)
    if not all(isinstance(t, types.Array) and t.dtype == types.float32 for t in arrays):
        return None  # float32 arrays only: the code below reads 4-byte elements
    sig = types.void(a0, a1, a2, a3, b, c0, c1, c2, c3, m, n, K, accumulate)

    def codegen(context, builder, signature, args):
        f32, i1, i32, i64 = ir.FloatType(), ir.IntType(1), ir.IntType(32), ir.IntType(64)
        vec, vptr = ir.VectorType(f32, LANES), ir.VectorType(f32, LANES).as_pointer()
        mask_type = ir.VectorType(i1, LANES)
        module = builder.module
        fma = cgutils.get_or_insert_function(module, ir.FunctionType(vec, [vec, vec, vec]),
                                             "llvm.fma.v16f32")
        masked_load = cgutils.get_or_insert_function(
            module, ir.FunctionType(vec, [vptr, i32, mask_type, vec]),
            "llvm.masked.load.v16f32.p0")
        masked_store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [vec, vptr, i32, mask_type]),
            "llvm.masked.store.v16f32.p0")
        arrays = [context.make_array(t)(context, builder, v)
                  for t, v in zip(signature.args[:9], args[:9])]

        def step(array, ndim):  # the stride of axis 0, in elements
            return builder.sdiv(cgutils.unpack_tuple(builder, array.strides, ndim)[0],
                                ir.Constant(i64, 4))

        def splat(x, element):
            undefined = ir.Constant(ir.VectorType(element, LANES), None)
            one = builder.insert_element(undefined, x, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, undefined,
                                          ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))

        def lanes_at(pointer, v):  # columns v * LANES .. of a row, as a vector pointer
            return builder.bitcast(builder.gep(pointer, [ir.Constant(i64, v * LANES)]), vptr)

        a_data, a_step = [x.data for x in arrays[:4]], [step(x, 1) for x in arrays[:4]]
        b_data, b_step = arrays[4].data, step(arrays[4], 2)
        c_data = [x.data for x in arrays[5:9]]
        m, n, K = (context.cast(builder, args[i], signature.args[i], types.int64)
                   for i in (9, 10, 11))
        accumulate = context.cast(builder, args[12], signature.args[12], types.boolean)
        lane = ir.Constant(ir.VectorType(i64, LANES), list(range(LANES)))
        masks = [builder.icmp_signed("<", builder.add(lane, splat(ir.Constant(i64, h * LANES),
                                                                   i64)), splat(n, i64))
                 for h in range(VECTORS)]  # the columns < n of each vector
        zero = ir.Constant(vec, [0.0] * LANES)
        align = ir.Constant(i32, 4)
        start = [[builder.select(accumulate, builder.call(
            masked_load, [lanes_at(c_data[r], h), align, masks[h], zero]), zero)
            for h in range(VECTORS)] for r in range(4)]
        entry = builder.block
        loop = builder.append_basic_block("matmul_tile.loop")
        done = builder.append_basic_block("matmul_tile.done")
        builder.cbranch(builder.icmp_signed(">", K, ir.Constant(i64, 0)), loop, done)

        builder.position_at_end(loop)  # k = 0 .. K - 1: acc_r += a_r[k] * b[k]
        k = builder.phi(i64)
        acc = [[builder.phi(vec) for h in range(VECTORS)] for r in range(4)]
        row = builder.gep(b_data, [builder.mul(k, b_step)])
        b_k = [builder.call(masked_load, [lanes_at(row, h), align, masks[h], zero])
               for h in range(VECTORS)]
        summed = []
        for r in range(4):
            a_rk = splat(builder.load(builder.gep(a_data[r], [builder.mul(k, a_step[r])])), f32)
            summed.append([builder.call(fma, [a_rk, b_k[h], acc[r][h]]) for h in range(VECTORS)])
        k_next = builder.add(k, ir.Constant(i64, 1))
        k.add_incoming(ir.Constant(i64, 0), entry)
        k.add_incoming(k_next, loop)
        for r in range(4):
            for h in range(VECTORS):
                acc[r][h].add_incoming(start[r][h], entry)
                acc[r][h].add_incoming(summed[r][h], loop)
        builder.cbranch(builder.icmp_signed("<", k_next, K), loop, done)

        builder.position_at_end(done)  # c_r = acc_r, rows r < m, columns < n
        result = [[builder.phi(vec) for h in range(VECTORS)] for r in range(4)]
        for r in range(4):
            for h in range(VECTORS):
                result[r][h].add_incoming(start[r][h], entry)
                result[r][h].add_incoming(summed[r][h], loop)
        for r in range(4):
            live = splat(builder.icmp_signed("<", ir.Constant(i64, r), m), i1)
            for h in range(VECTORS):
                builder.call(masked_store, [result[r][h], lanes_at(c_data[r], h), align,
                                            builder.and_(masks[h], live)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(fastmath=FLAGS, inline="always")
def row_scores(q, kT, b, h, i0, T, n, scale, s):
    """s[r, :n] = scale * q[b, i0 + r, h] . k[:n] for the ROWS rows of a block, (ROWS, n),
    from q (B, T, H, D) and head h's keys transposed, kT (D, S), WIDTH keys a tile.

    Rows past T repeat row T - 1 (their results are thrown away).
    """
    D = q.shape[3]
    i1, i2, i3 = min(i0 + 1, T - 1), min(i0 + 2, T - 1), min(i0 + 3, T - 1)
    q0, q1, q2, q3 = q[b, i0, h], q[b, i1, h], q[b, i2, h], q[b, i3, h]
    for j in range(0, n, WIDTH):  # (ROWS, D) @ (D, WIDTH)
        matmul_tile(q0, q1, q2, q3, kT[:, j:], s[0, j:], s[1, j:], s[2, j:], s[3, j:],
                    ROWS, min(WIDTH, n - j), D, False)
    for r in range(ROWS):
        for j in range(n):
            s[r, j] *= scale


@numba.njit(fastmath=FLAGS, inline="always")
def rows_times_matrix(p, m, b, h, n, out):
    """out[r] = sum_j p[r, j] m[b, j, h] for the ROWS rows: (ROWS, n) @ (n, D), WIDTH head
    dimensions a tile; m is (B, S, H, D)."""
    D = m.shape[3]
    for d in range(0, D, WIDTH):
        matmul_tile(p[0], p[1], p[2], p[3], m[b, :, h, d:], out[0, d:], out[1, d:],
                    out[2, d:], out[3, d:], ROWS, min(WIDTH, D - d), n, False)


@numba.njit(fastmath=FLAGS, inline="always")
def add_outer(p, x, b, h, i0, T, n, out):
    """out[b, j, h] += sum_r p[r, j] x[b, i0 + r, h] for j < n: (n, R) @ (R, D) for the R rows
    of p (R, S), four keys by WIDTH head dimensions a tile; x and out (B, T or S, H, D).
    Rows past T add nothing."""
    D = x.shape[3]
    rows = min(p.shape[0], T - i0)
    for j in range(0, n, 4):
        j1, j2, j3 = min(j + 1, n - 1), min(j + 2, n - 1), min(j + 3, n - 1)
        for d in range(0, D, WIDTH):
            matmul_tile(p[:, j], p[:, j1], p[:, j2], p[:, j3], x[b, i0:, h, d:],
                        out[b, j, h, d:], out[b, j1, h, d:], out[b, j2, h, d:],
                        out[b, j3, h, d:], min(4, n - j), min(WIDTH, D - d), rows, True)


@intrinsic
def maxnum32(typingctx, a, b):
    """max(a, b) of two float32 as LLVM's llvm.maxnum (a nan operand gives the other).

    Python's max compiles to a compare and a branch, which LLVM keeps scalar in a loop;
    a reduction over maxnum it vectorises, 16 lanes at a time."""

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f]),
                                            "llvm.maxnum.f32")
        return builder.call(fn, args, fastmath=("nnan", "nsz"))

    return types.float32(types.float32, types.float32), codegen


@numba.njit(fastmath=FLAGS, inline="always")
def masked_max(row, keep_b, n):
    """row[j] = -inf where key j is padding, for j < n; returns the max of row[:n]. A nan
    score is passed over here and still reaches the output, through the exp and the sum."""
    m = NEG_INF
    for j in range(n):
        x = row[j] if keep_b[j] else NEG_INF
        row[j] = x
        m = maxnum32(m, x)
    return m


@numba.njit(fastmath=FLAGS, inline="always")
def probabilities(s, r, n, reads, keep, b, S, n_block, lse_row):
    """Turn row r of scores into probabilities in place, over the block's n_block keys.

    lse_row: the row's log-sum-exp when known (the backward), nan to compute and return it
    (the forward). A row that reads no key is uniform over all S keys, as with the dense
    bias.
    """
    row = s[r]
    if not reads:
        row[:S] = ONE / f32(S)
        row[S:n_block] = ZERO
        return MIN32
    if math.isnan(lse_row):  # forward: the max, then exp and the sum, then divide
        m = masked_max(row, keep[b], n)
        total = ZERO
        for j in range(n):
            e = exp32(row[j] - m)
            row[j] = e
            total += e
        inv = ONE / total
        for j in range(n):
            row[j] *= inv
        lse_row = m + math.log(total)
    else:  # backward: p = exp(x - lse)
        for j in range(n):
            row[j] = exp32(row[j] - lse_row) if keep[b, j] else ZERO
    row[n:n_block] = ZERO
    return lse_row


@numba.njit(fastmath=FLAGS, inline="always")
def block_extent(i0, T, offset, first, S):
    """Keys the block's rows read: the most over its rows (a row reading none: all S)."""
    n_block = 0
    for r in range(ROWS):
        i = min(i0 + r, T - 1)
        n, reads = keys_of_row(i, offset, first, S)
        n_block = max(n_block, n if reads else S)
    return n_block


@numba.njit(fastmath=FLAGS, inline="always")
def transposed(x, b, h):
    """Head h of row b of x (B, S, H, D), transposed: (D, S), for row_scores."""
    S, D = x.shape[1], x.shape[3]
    xT = np.empty((D, S), dtype=np.float32)
    for j in range(S):
        for d in range(D):
            xT[d, j] = x[b, j, h, d]
    return xT


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def forward(q, k, v, keep, first, scale, causal):
    """out (B, T, H, D), lse (B, H, T) from q (B, T, H, D), k and v (B, S, H, D)."""
    B, T, H, D = q.shape
    S = k.shape[1]
    offset = S - T if causal else S  # keys cached before the first query (all: every row
    # then reads every kept key, bidirectional attention)
    out = np.empty((B, T, H, D), dtype=np.float32)
    lse = np.empty((B, H, T), dtype=np.float32)
    for bh in numba.prange(B * H):
        b, h = bh // H, bh % H
        kT = transposed(k, b, h)  # (D, S): the scores run along the keys
        s = np.empty((ROWS, S), dtype=np.float32)
        lse_rows = np.empty(ROWS, dtype=np.float32)
        acc = np.empty((ROWS, D), dtype=np.float32)
        for i0 in range(0, T, ROWS):
            n_block = block_extent(i0, T, offset, first[b], S)
            row_scores(q, kT, b, h, i0, T, min(n_block, i0 + ROWS + offset, S), scale, s)
            for r in range(ROWS):
                n, reads = keys_of_row(min(i0 + r, T - 1), offset, first[b], S)
                lse_rows[r] = probabilities(s, r, n, reads, keep, b, S, n_block, np.nan)
            rows_times_matrix(s, v, b, h, n_block, acc)  # (ROWS, S) @ (S, D) -> (ROWS, D)
            for r in range(min(ROWS, T - i0)):
                out[b, i0 + r, h] = acc[r]
                lse[b, h, i0 + r] = lse_rows[r]
    return out, lse


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def backward(g, g_lse, q, k, v, out, lse, keep, first, scale, causal):
    """dq (B, T, H, D), dk and dv (B, S, H, D): the VJP of `forward` (see the module
    docstring); g, q and out (B, T, H, D), k and v (B, S, H, D)."""
    B, T, H, D = q.shape
    S = k.shape[1]
    offset = S - T if causal else S
    dq = np.empty((B, T, H, D), dtype=np.float32)
    dk = np.empty((B, S, H, D), dtype=np.float32)
    dv = np.empty((B, S, H, D), dtype=np.float32)
    for bh in numba.prange(B * H):
        b, h = bh // H, bh % H
        for j in range(S):  # this head's dk and dv start at 0, zeroed by its own thread
            dk[b, j, h] = ZERO
            dv[b, j, h] = ZERO
        kT, vT = transposed(k, b, h), transposed(v, b, h)  # (D, S) each
        # Delta_t = dO_t . O_t - dL/dlse_t: the row sums of p * dP, read off the output.
        delta = np.empty(T, dtype=np.float32)
        for i in range(T):
            acc = ZERO
            for d in range(D):
                acc += g[b, i, h, d] * out[b, i, h, d]
            delta[i] = acc - g_lse[b, h, i]
        s = np.empty((BLOCK, S), dtype=np.float32)
        dp = np.empty((BLOCK, S), dtype=np.float32)
        acc = np.empty((ROWS, D), dtype=np.float32)
        for i0 in range(0, T, BLOCK):
            rows = min(BLOCK, T - i0)
            n_block = 0
            for r0 in range(0, rows, ROWS):
                n_block = max(n_block, block_extent(i0 + r0, T, offset, first[b], S))
            for r0 in range(0, rows, ROWS):  # ROWS query rows at a time: p, dP, dX and dq
                i1, sr, dr = i0 + r0, s[r0:r0 + ROWS], dp[r0:r0 + ROWS]
                row_scores(q, kT, b, h, i1, T, min(n_block, i1 + ROWS + offset, S), scale, sr)
                for r in range(ROWS):
                    i = min(i1 + r, T - 1)
                    n, reads = keys_of_row(i, offset, first[b], S)
                    probabilities(sr, r, n, reads, keep, b, S, n_block, lse[b, h, i])
                    if i1 + r >= T:  # a repeated row: it must add nothing to dk and dv
                        sr[r, :n_block] = ZERO
                # dP = dO v^T for the rows: (ROWS, D) @ (D, n) -> (ROWS, n)
                row_scores(g, vT, b, h, i1, T, n_block, ONE, dr)
                for r in range(ROWS):
                    delta_r = delta[min(i1 + r, T - 1)]
                    for j in range(n_block):
                        dr[r, j] = scale * sr[r, j] * (dr[r, j] - delta_r)  # now scale * dX
                rows_times_matrix(dr, k, b, h, n_block, acc)  # dq_t = scale sum_s dX_ts k_s
                for r in range(min(ROWS, T - i1)):
                    dq[b, i1 + r, h] = acc[r]
            add_outer(s, g, b, h, i0, T, n_block, dv)  # dv_s += sum_t p_ts dO_t
            add_outer(dp, q, b, h, i0, T, n_block, dk)  # dk_s += scale sum_t dX_ts q_t
    return dq, dk, dv


def first_kept(keep):
    """(B,) index of each row's first kept key, S where a row keeps none."""
    S = keep.shape[1]
    return np.where(keep.any(axis=1), keep.argmax(axis=1), S).astype(np.int64)


def plain(a):
    """`a` as a C-contiguous, writable array: Numba compiles one version of a kernel per
    layout and read-only flag, so every call passes the same kind (a gradient the engine
    hands over may be a read-only broadcast). No copy when `a` already is one."""
    return np.require(a, requirements=("C", "W"))


def by_token(x):
    """(B, H, T, D) -> (B, T, H, D), the layout the projections make and merge_heads reads:
    split_heads' view of a projection's output comes back C-contiguous here, uncopied."""
    return plain(x.transpose(0, 2, 1, 3))


def rows_by_token(x):
    """by_token, but a view whose rows of D are contiguous stays uncopied even when the rest
    is strided: q, k and v split from one fused projection (GPT-2's c_attn, (B, T, 3 C)).
    Numba compiles a version of the kernel for such strided arrays."""
    x = x.transpose(0, 2, 1, 3)
    if x.strides[-1] == x.itemsize and x.flags.writeable:
        return x
    return plain(x)


def by_head(x):
    """(B, T, H, D) -> the (B, H, T, D) view the primitive returns (merge_heads and
    split_heads' VJP turn it back into (B, T, C) without a copy)."""
    return x.transpose(0, 2, 1, 3)


def attention_forward(q, k, v, keep, scale, causal=True):
    """(out (B, H, T, D), lse (B, H, T)) of causal attention; see the module docstring.

    q (B, H, T, D), k and v (B, H, S, D) float32 NumPy arrays (any strides), keep (B, S)
    bool: False for a padding key. causal=False: every query reads every kept key (an
    encoder's attention; the same loops, each row's extent S). The kernel reads and writes
    the heads token by token, (B, T, H, D), so that split_heads' views of the projections
    go in and merge_heads' view comes out with no copy.
    """
    keep = plain(keep)
    out, lse = forward(rows_by_token(q), rows_by_token(k), rows_by_token(v), keep,
                       first_kept(keep), f32(scale), causal)
    return by_head(out), lse


def attention_backward(g, g_lse, q, k, v, keep, out, lse, scale, causal=True):
    """(dq, dk, dv) of `attention_forward` given g = dL/dout and g_lse = dL/dlse."""
    keep = plain(keep)
    dq, dk, dv = backward(
        by_token(g), plain(g_lse), rows_by_token(q), rows_by_token(k), rows_by_token(v),
        by_token(out),
        plain(lse), keep, first_kept(keep), f32(scale), causal)
    return by_head(dq), by_head(dk), by_head(dv)


# Below this many query rows the reference is faster: the kernel's blocks of ROWS rows and
# its parallel launch are built for training's long sequences, not for decoding's one new
# token (B=1, H=9, D=64, 2 threads, 2026-12-06: T=1 against S=100 keys 79 us against the
# reference's 29, S=1000 985 against 256; T=4 107 against 70; T=16 break-even, 119 / 117;
# T=64 175 against 286).
MIN_QUERIES = 16


def applies(q, k, v, keep):
    """Use the kernel: float32 NumPy arrays, keys and values of one shape, a (B, S) mask,
    at least MIN_QUERIES query rows."""
    arrays = (q, k, v)
    return (all(type(a) is np.ndarray and a.dtype == np.float32 and a.ndim == 4
                for a in arrays)
            and q.shape[2] >= MIN_QUERIES
            and k.shape == v.shape and k.shape[:2] == q.shape[:2] and k.shape[3] == q.shape[3]
            and type(keep) is np.ndarray and keep.dtype == np.bool_
            and keep.shape == (q.shape[0], k.shape[2]))
