"""One decoding step of a LLaMA-family block with block-quantised weights, as one Numba call.

The reference is the model itself: `LlamaDecoderLayer.forward` (npplm/models/llama.py; Qwen2's
is the same function) on one new token with a KVCache, built from the primitives of
npplm.layers and QuantizedLinear (npplm/quantization/linear.py). Decoding a token that way
runs some 30 primitive calls a block, each a Python call with its checks, reshapes and
temporaries, around 7 quantised products that are the real work: for SmolLM2-135M (30 blocks
of width 576) the Python around the products took 10 of the 25 ms a token, as long as the
4-bit products themselves. llama.cpp runs the same graph from C. Here a block's step is one
call: the same arithmetic, written out in order, with the products' tiles (`int4_tile`,
`int8_tile` of quantized.py, the very code QuantizedLinear's kernels run) spread over the
threads. For each sequence's new token (B rows, each at its own position under left
padding, all written at the cache's column p), with h (C,) a row's residual stream:

    x = h / sqrt(mean(h^2) + eps) * w_attn                      RMSNorm
    q, k, v = W_q x + b_q, W_k x + b_k, W_v x + b_v              (H D,), (K D,), (K D,)
    q, k = rope(q, p), rope(k, p)                                each head (x_j, x_j+D/2) rotated
    keys[:, p], values[:, p] = k, v                              the cache, K heads
    a_h = sum_s softmax_s(q_h . keys[g, s] / sqrt(D)) values[g, s]   kept s in 0..p,
                                                                 g = h // (H/K)
    h = h + W_o a                                                (H D,) -> (C,)
    x = h / sqrt(mean(h^2) + eps) * w_mlp                        RMSNorm
    h = h + W_down (silu(W_gate x) * W_up x)                     SwiGLU, (C,) -> (F,) -> (C,)

The cache is a float32 KVCache or an Int8KVCache (see "the cache" below): with the int8 one
the new k and v are quantised in place exactly as kv_cache.quantize_int8 does, and the
attention reads q . codes times the scale, and weight times the scale times the codes.

Each weight is a (codes, scale, offset) triple in PackedWeight's layout (8-bit weights carry
an empty offset), and each may be of its own format (a Q4_K_M file mixes Q4_K and Q6_K):
`tile_product` picks the 4- or 8-bit tile by the codes' type when Numba compiles. The tiles
of q, k and v share one `prange` (as do gate's and up's), so two threads split 15 tiles of
SmolLM2 rather than 3 of k and 3 of v, one at a time. Absent biases are empty arrays.

Where it differs from the reference: only the order of float32 sums (the products' are the
same code, so equal; the norms, rotations, softmax and SiLU are summed here in another
order), and exp, the attention kernel's vectorising polynomial (`exp32`, within a few
float32 ulps). tests/gpu/test_decoding_kernel.py compares steps with the model's own forward
(logits and the written cache within float32 rounding, 1e-5).

Measured (benchmarks/side_by_side_quantized.py, SmolLM2-135M Q4_1, 2 threads, the 2-core
Intel VM, 2026-12-06): 25.7 ms a token through the blocks' forward, 20.9 ms with this step,
11.8-12.9 ms once LLVM may use 512-bit vectors (gpu/numba_cpu/__init__.py), against
llama.cpp's 12.3-12.5 ms; the blocks take 9.3 ms of it, the LM head's product 1.9 ms.
With an int8 cache, 78.7-81.5 tokens/s against 78.3-82.9 with a float32 one, alternating in
one process (64 tokens after 64; the blocks' forward gave 36-38).
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from gpu.numba_cpu.attention import exp32
from gpu.numba_cpu.normalization import rrms
from gpu.numba_cpu.quantized import (
    FLAGS,
    int4_tile,
    int4_tile_rows,
    int8_tile,
    int8_tile_rows,
    quantize_rows_q8,
)

ROWS_APART = 4  # up to this many rows, each takes the one-row tile (see `tiles`)


def by_bits(four_bit, eight_bit):
    """A Numba overload that calls `four_bit(codes, scale, offset, ...)` for a weight
    (codes, scale, offset) of uint8 codes and `eight_bit(codes, scale, ...)` for int8 ones
    (no offset, no xsum), chosen when Numba compiles."""
    def choose(weight, x, xscale, xsum, t, y, start):
        if weight[0].dtype == numba.types.uint8:
            return lambda weight, x, xscale, xsum, t, y, start: four_bit(
                weight[0], weight[1], weight[2], x, xscale, xsum, t, y, start)
        return lambda weight, x, xscale, xsum, t, y, start: eight_bit(
            weight[0], weight[1], x, xscale, t, y, start)
    return choose


def tile_product(weight, x, xscale, xsum, t, y, start):
    """y[start:start + LANES] = tile t of `weight` (codes, scale, offset) times x (C,):
    `int4_tile` for uint8 codes, `int8_tile` for int8."""
    raise NotImplementedError("tile_product runs inside Numba-compiled code only")


def tile_rows(weight, x, xscale, xsum, t, y, start):
    """y[:, start:start + LANES] = tile t of `weight` times every row of x (N, C):
    `int4_tile_rows` or `int8_tile_rows`, by the codes' type."""
    raise NotImplementedError("tile_rows runs inside Numba-compiled code only")


overload(tile_product, inline="always")(by_bits(int4_tile, int8_tile))
overload(tile_rows, inline="always")(by_bits(int4_tile_rows, int8_tile_rows))


@numba.njit(fastmath=FLAGS, cache=True)
def tiles(weight, x, xscale, xsum, t, y, start):
    """Tile t of `weight` times every row of x (N, C) into y[:, start:start + LANES]: up to
    ROWS_APART rows one at a time, each byte unpacked where it is used (`tile_product`),
    more rows with each byte position unpacked once for all of them (`tile_rows`).
    SmolLM2-135M Q4_1, ms a decoding step of B rows, 2 threads, 2026-12-06: B = 2 took 19.6
    one row at a time and 24.6 unpacked once, B = 4 28.5 and 29.8, B = 8 46.1 and 38.8-42.1
    (B = 1: 10.5-11.3)."""
    if x.shape[0] <= ROWS_APART:
        for n in range(x.shape[0]):
            tile_product(weight, x[n], xscale[n], xsum[n], t, y[n], start)
    else:
        tile_rows(weight, x, xscale, xsum, t, y, start)


def columns(weight):
    """C of a (R, C) weight (codes, scale, offset): NB blocks of 16 bytes (4-bit, 32
    weights) or of G int8 codes."""
    raise NotImplementedError("columns runs inside Numba-compiled code only")


@overload(columns, inline="always")
def _columns(weight):
    if weight[0].dtype == numba.types.uint8:
        return lambda weight: weight[0].shape[1] * 2 * weight[0].shape[2]
    return lambda weight: weight[0].shape[1] * weight[0].shape[2]


@numba.njit(fastmath=FLAGS, cache=True)
def activations_of(x, q8):
    """(x as the products read it, xscale, xsum), each per block of 32, for rows x (N, C):
    float32 x with xscale 1 and the block sums (the 4-bit offsets' term), or llama.cpp's Q8
    rounding (quantized.quantize_rows_q8)."""
    if q8:
        return quantize_rows_q8(x)
    N, NB = x.shape[0], x.shape[1] // 32
    xsum = np.zeros((N, NB), dtype=np.float32)
    for n in range(N):
        for b in range(NB):
            for i in range(32):
                xsum[n, b] += x[n, b * 32 + i]
    return x, np.ones((N, NB), dtype=np.float32), xsum


@numba.njit(fastmath=FLAGS, cache=True)
def rms_normed(h, w, eps):
    """RMSNorm of each row: h / sqrt(mean(h^2) + eps) * w, (N, C)."""
    x = np.empty_like(h)
    for n in range(h.shape[0]):
        r = np.float32(rrms(h[n], eps))
        for j in range(h.shape[1]):
            x[n, j] = h[n, j] * r * w[j]
    return x


@numba.njit(fastmath=FLAGS, cache=True)
def add_bias(y, start, bias):
    """y[:, start:start + n] += bias (n,), when the family has one (n = 0 otherwise)."""
    for row in range(y.shape[0]):
        for j in range(bias.size):
            y[row, start + j] += bias[j]


@numba.njit(fastmath=FLAGS, cache=True)
def rotated(y, start, n_heads, cos, sin):
    """rope of n_heads heads of D stored from y[start] (one row): (x_j, x_{j+D/2}) of each
    head -> (x_j cos_j - x_{j+D/2} sin_j, x_{j+D/2} cos_{j+D/2} + x_j sin_{j+D/2})
    (rotate_half's convention), as a new (n_heads, D) array."""
    D = cos.size
    half = D // 2
    out = np.empty((n_heads, D), dtype=np.float32)
    for hd in range(n_heads):
        base = start + hd * D
        for j in range(half):
            a, b = y[base + j], y[base + half + j]
            out[hd, j] = a * cos[j] - b * sin[j]
            out[hd, half + j] = b * cos[half + j] + a * sin[half + j]
    return out


# --- the cache: float32 arrays, or int8 codes with float16 scales ---------------------------
#
# The step takes each of keys and values as a tuple: (array,) of float32 (B, K, S_max, D),
# or (codes, scale_bits) of an Int8KVCache: int8 codes (B, K, S_max, D) and the float16
# scales' bits as uint16 (B, K, S_max) (Numba has no float16 on the CPU; the two intrinsics
# below convert with the CPU's own instructions, as NumPy's astype does: round to nearest,
# ties to even). Three overloads pick the storage's code when Numba compiles: `store`
# writes a new vector (the int8 one quantised exactly as kv_cache.quantize_int8 does),
# `dot_cached` and `add_cached` read one.


@intrinsic
def half_to_float32(typingctx, bits):
    """The float16 whose bits are `bits` (uint16), widened to float32 (exact)."""

    def codegen(context, builder, signature, args):
        half = builder.bitcast(builder.trunc(args[0], ir.IntType(16)), ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def float32_to_half(typingctx, x):
    """x rounded to float16 (to nearest, ties to even), as its bits (uint16)."""

    def codegen(context, builder, signature, args):
        half = builder.fptrunc(args[0], ir.HalfType())
        return builder.bitcast(half, ir.IntType(16))

    return types.uint16(types.float32), codegen


HALF_MAX = np.float32(np.finfo(np.float16).max)


@numba.njit(cache=True)  # no fast-math: the division and the rounding are NumPy's
def store_int8(codes, scale_bits, n, g, p, x):
    """codes[n, g, p], scale_bits[n, g, p] = kv_cache.quantize_int8(x) for one vector x (D,):
    s = max|x| / 127 rounded up to float16, q = rint(x / s) (s = 0: codes 0)."""
    top = np.float32(0.0)
    for d in range(x.size):
        top = max(top, abs(x[d]))
    exact = top / np.float32(127)
    if exact > HALF_MAX:
        raise OverflowError("a cached vector is beyond what a float16 scale holds: use a "
                            "float KV cache")
    bits = float32_to_half(exact)
    if half_to_float32(bits) < exact:  # round up: the successor's bits are the next integer
        bits = np.uint16(bits + np.uint16(1))
    s = half_to_float32(bits)
    step = s if s > 0 else np.float32(1.0)
    for d in range(x.size):
        codes[n, g, p, d] = np.int8(min(max(np.rint(x[d] / step), np.float32(-127)),
                                        np.float32(127)))
    scale_bits[n, g, p] = bits


def store(cache, n, g, p, x):
    """Write x (D,) as position p of row n, key/value head g."""
    raise NotImplementedError("store runs inside Numba-compiled code only")


def dot_cached(cache, n, g, s, q):
    """q (D,) . the cached vector at position s of row n, head g."""
    raise NotImplementedError("dot_cached runs inside Numba-compiled code only")


def add_cached(cache, n, g, s, weight, out, start):
    """out[start:start + D] += weight * the cached vector at position s of row n, head g."""
    raise NotImplementedError("add_cached runs inside Numba-compiled code only")


def _is_int8(cache):
    return len(cache.types) == 2


@overload(store, inline="always")
def _store(cache, n, g, p, x):
    if _is_int8(cache):
        return lambda cache, n, g, p, x: store_int8(cache[0], cache[1], n, g, p, x)

    def plain(cache, n, g, p, x):
        for d in range(x.size):
            cache[0][n, g, p, d] = x[d]
    return plain


@overload(dot_cached, inline="always")
def _dot_cached(cache, n, g, s, q):
    if _is_int8(cache):
        def int8(cache, n, g, s, q):  # s (q . codes): the scale once, not once a code
            codes = cache[0]
            dot = np.float32(0.0)
            for d in range(q.size):
                dot += q[d] * np.float32(codes[n, g, s, d])
            return dot * half_to_float32(cache[1][n, g, s])
        return int8

    def plain(cache, n, g, s, q):
        dot = np.float32(0.0)
        for d in range(q.size):
            dot += q[d] * cache[0][n, g, s, d]
        return dot
    return plain


@overload(add_cached, inline="always")
def _add_cached(cache, n, g, s, weight, out, start):
    if _is_int8(cache):
        def int8(cache, n, g, s, weight, out, start):
            codes = cache[0]
            w = weight * half_to_float32(cache[1][n, g, s])
            for d in range(codes.shape[3]):
                out[start + d] += w * np.float32(codes[n, g, s, d])
        return int8

    def plain(cache, n, g, s, weight, out, start):
        values = cache[0]
        for d in range(values.shape[3]):
            out[start + d] += weight * values[n, g, s, d]
    return plain


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def llama_block_step(h, p, keep, cos, sin, eps, q8, n_heads, attn_norm, wq, wk, wv, bq, bk,
                     bv, wo, mlp_norm, w_gate, w_up, w_down, keys, values):
    """One new token of each of B sequences through one block, in place: h (B, C) the
    residual stream; the cache's column p is theirs; keep (B, p + 1) which cached keys each
    row may read (padding: False); cos, sin (B, D) each row's rotation (its own position,
    under left padding); keys, values (B, K, S_max, D) the block's cache, written at p.
    Weights are (codes, scale, offset) triples, biases (n,) or empty; q8: llama.cpp's 8-bit
    activations instead of float32 (quantized.quantize_rows_q8)."""
    B, C, H = h.shape[0], h.shape[1], n_heads
    K, D = keys[0].shape[1], keys[0].shape[3]
    L = wq[0].shape[3]  # rows a tile
    Tq, Tk, Tv = wq[0].shape[0], wk[0].shape[0], wv[0].shape[0]

    # Attention. q, k, v: every tile of the three in one parallel loop, each tile for every
    # row of x (q's outputs from 0, k's from Tq L, v's from (Tq + Tk) L; padding unread).
    x, xscale, xsum = activations_of(rms_normed(h, attn_norm, eps), q8)
    qkv = np.empty((B, (Tq + Tk + Tv) * L), dtype=np.float32)
    for j in numba.prange(Tq + Tk + Tv):
        if j < Tq:
            tiles(wq, x, xscale, xsum, j, qkv, j * L)
        elif j < Tq + Tk:
            tiles(wk, x, xscale, xsum, j - Tq, qkv, j * L)
        else:
            tiles(wv, x, xscale, xsum, j - Tq - Tk, qkv, j * L)
    add_bias(qkv, 0, bq)
    add_bias(qkv, Tq * L, bk)
    add_bias(qkv, (Tq + Tk) * L, bv)
    q = np.empty((B, H, D), dtype=np.float32)
    for n in range(B):
        q[n] = rotated(qkv[n], 0, H, cos[n], sin[n])  # (H, D)
        k = rotated(qkv[n], Tq * L, K, cos[n], sin[n])  # (K, D)
        for g in range(K):  # the cache keeps K rotated keys and values a position
            start = (Tq + Tk) * L + g * D
            store(keys, n, g, p, k[g])
            store(values, n, g, p, qkv[n, start:start + D])
    # Each query head reads its key/value head g = hd // (H / K) at the kept positions of
    # 0..p. A row that may read none is uniform over all p + 1, as the dense bias makes it.
    a = np.empty((B, H * D), dtype=np.float32)
    scale = np.float32(1.0 / math.sqrt(D))
    for task in numba.prange(B * H):
        n, hd = task // H, task % H
        g = hd // (H // K)
        scores = np.zeros(p + 1, dtype=np.float32)
        top = np.float32(-np.inf)
        for s in range(p + 1):
            if keep[n, s]:
                scores[s] = dot_cached(keys, n, g, s, q[n, hd]) * scale
                top = max(top, scores[s])
        total = np.float32(0.0)
        for s in range(p + 1):
            if keep[n, s]:
                scores[s] = exp32(scores[s] - top)
            elif top == -np.inf:  # no key kept at all
                scores[s] = np.float32(1.0)
            else:
                scores[s] = np.float32(0.0)
            total += scores[s]
        for d in range(D):
            a[n, hd * D + d] = 0.0
        for s in range(p + 1):
            add_cached(values, n, g, s, scores[s] / total, a[n], hd * D)
    x, xscale, xsum = activations_of(a, q8)
    out = np.empty((B, wo[0].shape[0] * L), dtype=np.float32)
    for j in numba.prange(wo[0].shape[0]):
        tiles(wo, x, xscale, xsum, j, out, j * L)
    for n in range(B):
        for c in range(C):
            h[n, c] += out[n, c]

    # SwiGLU: gate's and up's tiles in one parallel loop, then down.
    x, xscale, xsum = activations_of(rms_normed(h, mlp_norm, eps), q8)
    Tg, Tu = w_gate[0].shape[0], w_up[0].shape[0]
    gate_up = np.empty((B, (Tg + Tu) * L), dtype=np.float32)
    for j in numba.prange(Tg + Tu):
        if j < Tg:
            tiles(w_gate, x, xscale, xsum, j, gate_up, j * L)
        else:
            tiles(w_up, x, xscale, xsum, j - Tg, gate_up, j * L)
    F = columns(w_down)
    m = np.empty((B, F), dtype=np.float32)
    for n in range(B):
        for f in range(F):
            z = gate_up[n, f]
            m[n, f] = z / (np.float32(1.0) + exp32(-z)) * gate_up[n, Tg * L + f]  # silu(g) u
    x, xscale, xsum = activations_of(m, q8)
    for j in numba.prange(w_down[0].shape[0]):
        tiles(w_down, x, xscale, xsum, j, out, j * L)
    for n in range(B):
        for c in range(C):
            h[n, c] += out[n, c]


def applies(keys, values):
    """Take the kernel for a cache (KVCache.kernel_arrays) whose keys and values are each
    (float32 (B, K, S_max, D),) or (int8 codes (B, K, S_max, D), uint16 scale bits
    (B, K, S_max)), NumPy and C-contiguous (the kernel writes them in place); the caller
    (LlamaModel.forward, through llama.py's `one_call_a_block`) checks the rest: one new
    token a row, quantised projections."""
    def plain(a, dtype, ndim):
        return (type(a) is np.ndarray and a.dtype == dtype and a.ndim == ndim
                and a.flags.c_contiguous)

    def storage(c):
        if len(c) == 1:
            return plain(c[0], np.float32, 4)
        return (len(c) == 2 and plain(c[0], np.int8, 4) and plain(c[1], np.uint16, 3)
                and c[1].shape == c[0].shape[:3])
    return all(isinstance(c, tuple) and storage(c) for c in (keys, values))
