"""Products with block-quantised weights as parallel Numba loops, float32, CPU.

The references are in npplm/quantization/linear.py: dequantise the weight to float32,
W = scale * q (+ offset) block by block, and multiply. These kernels never build W. They
read the weight as `PackedWeight` lays it out (tiles of LANES output rows, interleaved):

    codes   (R / LANES, NB, G, LANES)  tile t, block b, position i in the block, row l:
            int4: uint8, byte i holds weight i (low nibble) and i + 16 (high), G = 16
            int8: int8, one weight a byte, G = the block's size (32, or Q6_K's 16)
    scale   (R / LANES, NB, LANES)  float32, per block and row
    offset  (R / LANES, NB, LANES)  float32, per block and row (int4 only: Q4_1's m,
            Q4_K's -dmin m, Q4_0's -8 d)

Why this layout. A row-major loop (one output row's blocks, 16 bytes at a time) reduces 32
products to one number per block, which LLVM, through Numba, would not vectorise (it
unrolled the 16-iteration loop and then vectorised the loop over blocks, with gathers). With
rows interleaved, the innermost loop runs over LANES rows of one tile: for each byte
position i the same two activations x[i], x[i + 16] multiply LANES weights from LANES
consecutive bytes, a broadcast multiply-add that vectorises as it is (8 lanes a ymm
register, 16 a zmm one where LLVM may use them, see gpu/numba_cpu/__init__.py: zero-extend
the bytes, mask and shift out the nibbles, convert, fused multiply-add). llama.cpp repacks
for the same reason (its "q4_0_8x8" layouts interleave 8 rows). LANES = 64 was the fastest
of 16, 32, 64 (a (1536, 576) Q4 matrix-vector product on one thread, 256-bit: 134, 71, 58
us; OpenBLAS's float32 GEMV of the same matrix, 4 times the bytes, 131 us), and is a trip
count Numba does not know, so LLVM vectorises the loop instead of unrolling it. Per block
and row, the two partial sums meet the scales:

    y[n, r] = sum_b  scale[r, b] xscale[n, b] s[n, r, b]  +  offset[r, b] xsum[n, b]
    s[n, r, b] = sum_i  q[r, b, i] x[n, b, i]             (i over the block's G weights)
    xsum[n, b] = sum_i x[n, b, i]                          (the offset term's activations)

Two shapes of the loop. For one row of x (decoding: `matvec_*`) each byte is unpacked where
it is multiplied. For several (`matmul_*`) a tile's byte position is unpacked once into
LANES floats that every row of x then reads: for one row that extra store and load made
the (1536, 576) product 1.6x slower (51 against 32 us on 2 threads), for 16 rows the
unpacking once made it 1.35x faster.

Two ways to feed the activations (npplm/quantization/linear.py chooses):
  float32   x as it is, xscale = 1: the float32-activation product, the reference's
            numbers up to the order of the sums (tested within 1e-5 relative).
  Q8        llama.cpp's: x quantised per block of 32 to int8 codes with one scale,
            xq = round(x / d), d = max|x| / 127 (`quantize_rows_q8`), passed as float32
            integers with xscale = d and xsum = d * sum(xq). Every product q xq is an
            integer below 2^11 and a block's sum below 2^16, so s is exactly the integer
            dot product llama.cpp computes with VNNI instructions, here in float32 lanes
            (Numba does not emit int8 dot-product instructions). It costs what the float32
            path costs and adds the activation's rounding, |x - d xq| <= d / 2.

Rows are independent, so the `prange` runs over tiles and every output is summed in the
same order on any number of threads. Only float32 activations come here.
"""

import numba
import numpy as np

LANES = 64  # output rows per tile, interleaved (see above)
FEW_ROWS = 64  # up to this many rows of x the kernels; beyond, dequantise once and GEMM
FLAGS = {"contract", "nsz", "reassoc"}  # fused multiply-adds; sums may be regrouped
LOW, SHIFT = np.uint8(15), np.uint8(4)  # nibble mask and shift, kept uint8 for LLVM


@numba.njit(fastmath=FLAGS, cache=True)
def int4_tile(codes, scale, offset, x, xscale, xsum, t, y, start):
    """y[start:start + LANES] = tile t of a 4-bit weight times one row x (C,), each byte
    unpacked where it is used (xscale, xsum (C/32,) as above)."""
    NB, G, lanes = codes.shape[1], codes.shape[2], codes.shape[3]
    s = np.empty(lanes, dtype=np.float32)
    acc = np.zeros(lanes, dtype=np.float32)
    for b in range(NB):
        s[:] = 0.0
        for i in range(G):
            lo, hi = x[b * 2 * G + i], x[b * 2 * G + G + i]  # weights i and i + 16
            for lane in range(lanes):
                byte = codes[t, b, i, lane]
                s[lane] += (np.float32(np.uint8(byte & LOW)) * lo
                            + np.float32(np.uint8(byte >> SHIFT)) * hi)
        xs, xm = xscale[b], xsum[b]
        for lane in range(lanes):
            acc[lane] += scale[t, b, lane] * xs * s[lane] + offset[t, b, lane] * xm
    for lane in range(lanes):
        y[start + lane] = acc[lane]


@numba.njit(fastmath=FLAGS, cache=True)
def int8_tile(codes, scale, x, xscale, t, y, start):
    """y[start:start + LANES] = tile t of an 8-bit weight times one row x (C,)."""
    NB, G, lanes = codes.shape[1], codes.shape[2], codes.shape[3]
    s = np.empty(lanes, dtype=np.float32)
    acc = np.zeros(lanes, dtype=np.float32)
    for b in range(NB):
        s[:] = 0.0
        for i in range(G):
            xi = x[b * G + i]
            for lane in range(lanes):
                s[lane] += np.float32(codes[t, b, i, lane]) * xi
        xs = xscale[b // (32 // G)]  # activation blocks are 32 wide
        for lane in range(lanes):
            acc[lane] += scale[t, b, lane] * xs * s[lane]
    for lane in range(lanes):
        y[start + lane] = acc[lane]


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def matvec_int4(codes, scale, offset, x, xscale, xsum, lanes):
    """`matmul_int4` for one row of x (decoding): `int4_tile` for every tile."""
    y = np.empty((1, codes.shape[0] * lanes), dtype=np.float32)
    for t in numba.prange(codes.shape[0]):
        int4_tile(codes, scale, offset, x[0], xscale[0], xsum[0], t, y[0], t * lanes)
    return y


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def matvec_int8(codes, scale, x, xscale, lanes):
    """`matmul_int8` for one row of x (decoding): `int8_tile` for every tile."""
    y = np.empty((1, codes.shape[0] * lanes), dtype=np.float32)
    for t in numba.prange(codes.shape[0]):
        int8_tile(codes, scale, x[0], xscale[0], t, y[0], t * lanes)
    return y


@numba.njit(fastmath=FLAGS, cache=True)
def int4_tile_rows(codes, scale, offset, x, xscale, xsum, t, y, start):
    """y[:, start:start + LANES] = tile t of a 4-bit weight times every row of x (N, C),
    each byte position unpacked once into LANES floats that every row reads."""
    NB, G, lanes = codes.shape[1], codes.shape[2], codes.shape[3]  # G = 16 bytes a block
    N = x.shape[0]
    s = np.empty((N, lanes), dtype=np.float32)  # a block's sums, per row of x and lane
    acc = np.zeros((N, lanes), dtype=np.float32)
    lo = np.empty(lanes, dtype=np.float32)  # the tile's codes at one byte position
    hi = np.empty(lanes, dtype=np.float32)
    for b in range(NB):
        s[:] = 0.0
        for i in range(G):
            for lane in range(lanes):  # unpacked once, used by every row of x
                byte = codes[t, b, i, lane]
                lo[lane] = np.float32(np.uint8(byte & LOW))  # weight i of the block
                hi[lane] = np.float32(np.uint8(byte >> SHIFT))  # weight i + 16
            for n in range(N):
                xl, xh = x[n, b * 2 * G + i], x[n, b * 2 * G + G + i]
                for lane in range(lanes):
                    s[n, lane] += lo[lane] * xl + hi[lane] * xh
        for n in range(N):
            xs, xm = xscale[n, b], xsum[n, b]
            for lane in range(lanes):
                acc[n, lane] += scale[t, b, lane] * xs * s[n, lane] + offset[t, b, lane] * xm
    for n in range(N):
        for lane in range(lanes):
            y[n, start + lane] = acc[n, lane]


@numba.njit(fastmath=FLAGS, cache=True)
def int8_tile_rows(codes, scale, x, xscale, t, y, start):
    """y[:, start:start + LANES] = tile t of an 8-bit weight times every row of x (N, C)."""
    NB, G, lanes = codes.shape[1], codes.shape[2], codes.shape[3]  # G = 32, or 16 (Q6_K)
    N = x.shape[0]
    s = np.empty((N, lanes), dtype=np.float32)
    acc = np.zeros((N, lanes), dtype=np.float32)
    w = np.empty(lanes, dtype=np.float32)
    for b in range(NB):
        s[:] = 0.0
        for i in range(G):
            for lane in range(lanes):
                w[lane] = np.float32(codes[t, b, i, lane])
            for n in range(N):
                xi = x[n, b * G + i]
                for lane in range(lanes):
                    s[n, lane] += w[lane] * xi
        for n in range(N):
            xs = xscale[n, b // (32 // G)]  # activation blocks are 32 wide
            for lane in range(lanes):
                acc[n, lane] += scale[t, b, lane] * xs * s[n, lane]
    for n in range(N):
        for lane in range(lanes):
            y[n, start + lane] = acc[n, lane]


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def matmul_int4(codes, scale, offset, x, xscale, xsum, lanes):
    """y (N, R) = x (N, C) times the transpose of a 4-bit packed weight (R, C)."""
    y = np.empty((x.shape[0], codes.shape[0] * lanes), dtype=np.float32)
    for t in numba.prange(codes.shape[0]):
        int4_tile_rows(codes, scale, offset, x, xscale, xsum, t, y, t * lanes)
    return y


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def matmul_int8(codes, scale, x, xscale, lanes):
    """y (N, R) = x (N, C) times the transpose of an 8-bit packed weight (R, C)."""
    y = np.empty((x.shape[0], codes.shape[0] * lanes), dtype=np.float32)
    for t in numba.prange(codes.shape[0]):
        int8_tile_rows(codes, scale, x, xscale, t, y, t * lanes)
    return y


@numba.njit(parallel=True, cache=True)
def dequantize_int4(codes, scale, offset, lanes):
    """The float32 weight (R, C) of a 4-bit packed one: scale q + offset, block by block."""
    T, NB, G = codes.shape[0], codes.shape[1], codes.shape[2]
    w = np.empty((T * lanes, NB * 2 * G), dtype=np.float32)
    for t in numba.prange(T):
        for lane in range(lanes):
            row = w[t * lanes + lane]
            for b in range(NB):
                d, m = scale[t, b, lane], offset[t, b, lane]
                for i in range(G):
                    byte = codes[t, b, i, lane]
                    row[b * 2 * G + i] = d * np.float32(np.uint8(byte & LOW)) + m
                    row[b * 2 * G + G + i] = d * np.float32(np.uint8(byte >> SHIFT)) + m
    return w


@numba.njit(parallel=True, cache=True)
def dequantize_int8(codes, scale, lanes):
    """The float32 weight (R, C) of an 8-bit packed one: scale q, block by block."""
    T, NB, G = codes.shape[0], codes.shape[1], codes.shape[2]
    w = np.empty((T * lanes, NB * G), dtype=np.float32)
    for t in numba.prange(T):
        for lane in range(lanes):
            row = w[t * lanes + lane]
            for b in range(NB):
                d = scale[t, b, lane]
                for i in range(G):
                    row[b * G + i] = d * np.float32(codes[t, b, i, lane])
    return w


@numba.njit(parallel=True, cache=True)
def gather_rows_int8(codes, scale, ids, lanes):
    """Rows `ids` of an 8-bit packed weight, dequantised, (len(ids), C): an embedding
    lookup in a table kept quantised (the tied LM head's, in most GGUF files)."""
    NB, G = codes.shape[1], codes.shape[2]
    out = np.empty((ids.shape[0], NB * G), dtype=np.float32)
    for k in numba.prange(ids.shape[0]):
        t, lane = ids[k] // lanes, ids[k] % lanes
        for b in range(NB):
            d = scale[t, b, lane]
            for i in range(G):
                out[k, b * G + i] = d * np.float32(codes[t, b, i, lane])
    return out


@numba.njit(parallel=True, cache=True)
def gather_rows_int4(codes, scale, offset, ids, lanes):
    """Rows `ids` of a 4-bit packed weight, dequantised, (len(ids), C)."""
    NB, G = codes.shape[1], codes.shape[2]
    out = np.empty((ids.shape[0], NB * 2 * G), dtype=np.float32)
    for k in numba.prange(ids.shape[0]):
        t, lane = ids[k] // lanes, ids[k] % lanes
        for b in range(NB):
            d, m = scale[t, b, lane], offset[t, b, lane]
            for i in range(G):
                byte = codes[t, b, i, lane]
                out[k, b * 2 * G + i] = d * np.float32(np.uint8(byte & LOW)) + m
                out[k, b * 2 * G + G + i] = d * np.float32(np.uint8(byte >> SHIFT)) + m
    return out


@numba.njit(cache=True)
def quantize_rows_q8(x):
    """llama.cpp's Q8_0 activations: per block of 32, d = max|x| / 127, xq = round(x / d)
    (0 where d = 0), returned as (xq as float32 integers (N, C), d (N, C/32),
    d * sum(xq) (N, C/32))."""
    N, C = x.shape
    NB = C // 32
    xq = np.empty((N, C), dtype=np.float32)
    d = np.empty((N, NB), dtype=np.float32)
    dsum = np.empty((N, NB), dtype=np.float32)
    for n in range(N):
        for b in range(NB):
            amax = np.float32(0.0)
            for i in range(32):
                amax = max(amax, abs(x[n, b * 32 + i]))
            db = amax / np.float32(127.0)
            inv = np.float32(1.0) / db if db > 0 else np.float32(0.0)
            total = np.float32(0.0)
            for i in range(32):
                q = np.float32(np.rint(x[n, b * 32 + i] * inv))  # half to even
                xq[n, b * 32 + i] = q
                total += q
            d[n, b], dsum[n, b] = db, db * total
    return xq, d, dsum


def applies(x):
    """Take the kernels: x (N, C) float32 NumPy with N <= FEW_ROWS (decoding, short
    chunks). More rows (a prefill) are better served by dequantising W once and one BLAS
    GEMM; float64 (gradient checks) takes the reference."""
    return type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 \
        and x.shape[0] <= FEW_ROWS
