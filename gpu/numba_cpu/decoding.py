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
threads. For one token at position p, with h (C,) the residual stream:

    x = h / sqrt(mean(h^2) + eps) * w_attn                      RMSNorm
    q, k, v = W_q x + b_q, W_k x + b_k, W_v x + b_v              (H D,), (K D,), (K D,)
    q, k = rope(q, p), rope(k, p)                                each head (x_j, x_j+D/2) rotated
    keys[:, p], values[:, p] = k, v                              the cache, K heads
    a_h = sum_s softmax_s(q_h . keys[g, s] / sqrt(D)) values[g, s]   s = 0..p, g = h // (H/K)
    h = h + W_o a                                                (H D,) -> (C,)
    x = h / sqrt(mean(h^2) + eps) * w_mlp                        RMSNorm
    h = h + W_down (silu(W_gate x) * W_up x)                     SwiGLU, (C,) -> (F,) -> (C,)

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
"""

import math

import numba
import numpy as np
from numba.extending import overload

from gpu.numba_cpu.attention import exp32
from gpu.numba_cpu.normalization import rrms
from gpu.numba_cpu.quantized import FLAGS, int4_tile, int8_tile, quantize_rows_q8


def tile_product(weight, x, xscale, xsum, t, y, start):
    """y[start:start + LANES] = tile t of `weight` (codes, scale, offset) times x (C,):
    `int4_tile` for uint8 codes, `int8_tile` for int8 (chosen when Numba compiles)."""
    raise NotImplementedError("tile_product runs inside Numba-compiled code only")


@overload(tile_product, inline="always")
def _tile_product(weight, x, xscale, xsum, t, y, start):
    if weight[0].dtype == numba.types.uint8:
        def four_bit(weight, x, xscale, xsum, t, y, start):
            int4_tile(weight[0], weight[1], weight[2], x, xscale, xsum, t, y, start)
        return four_bit

    def eight_bit(weight, x, xscale, xsum, t, y, start):
        int8_tile(weight[0], weight[1], x, xscale, t, y, start)
    return eight_bit


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
    """(x as the products read it, xscale, xsum), each per block of 32, for one row x (C,):
    float32 x with xscale 1 and the block sums (the 4-bit offsets' term), or llama.cpp's Q8
    rounding (quantized.quantize_rows_q8)."""
    if q8:
        xq, d, dsum = quantize_rows_q8(x.reshape(1, x.size))
        return xq[0], d[0], dsum[0]
    NB = x.size // 32
    xsum = np.zeros(NB, dtype=np.float32)
    for b in range(NB):
        for i in range(32):
            xsum[b] += x[b * 32 + i]
    return x, np.ones(NB, dtype=np.float32), xsum


@numba.njit(fastmath=FLAGS, cache=True)
def rms_normed(h, w, eps):
    """RMSNorm of one row: h / sqrt(mean(h^2) + eps) * w, (C,)."""
    r = np.float32(rrms(h, eps))
    x = np.empty_like(h)
    for j in range(h.size):
        x[j] = h[j] * r * w[j]
    return x


@numba.njit(fastmath=FLAGS, cache=True)
def add_bias(y, start, bias):
    """y[start:start + n] += bias (n,), when the family has one (n = 0 otherwise)."""
    for j in range(bias.size):
        y[start + j] += bias[j]


@numba.njit(fastmath=FLAGS, cache=True)
def rotated(y, start, n_heads, cos, sin):
    """rope of n_heads heads of D stored from y[start]: (x_j, x_{j+D/2}) of each head ->
    (x_j cos_j - x_{j+D/2} sin_j, x_{j+D/2} cos_{j+D/2} + x_j sin_{j+D/2}) (rotate_half's
    convention), as a new (n_heads, D) array."""
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


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def llama_block_step(h, p, cos, sin, eps, q8, n_heads, attn_norm, wq, wk, wv, bq, bk, bv,
                     wo, mlp_norm, w_gate, w_up, w_down, keys, values):
    """One token through one block, in place: h (C,) the residual stream at position p;
    cos, sin (D,) its rotation; keys, values (1, K, S_max, D) the block's cache, written at
    p and read at 0..p. Weights are (codes, scale, offset) triples, biases (n,) or empty;
    q8: llama.cpp's 8-bit activations instead of float32 (quantized.quantize_rows_q8)."""
    C, H = h.size, n_heads
    K, D = keys.shape[1], keys.shape[3]
    L = wq[0].shape[3]  # rows a tile
    Tq, Tk, Tv = wq[0].shape[0], wk[0].shape[0], wv[0].shape[0]

    # Attention. q, k, v: every tile of the three in one parallel loop, into one array
    # (q's rows from 0, k's from Tq L, v's from (Tq + Tk) L; padding rows unread).
    x, xscale, xsum = activations_of(rms_normed(h, attn_norm, eps), q8)
    qkv = np.empty((Tq + Tk + Tv) * L, dtype=np.float32)
    for j in numba.prange(Tq + Tk + Tv):
        if j < Tq:
            tile_product(wq, x, xscale, xsum, j, qkv, j * L)
        elif j < Tq + Tk:
            tile_product(wk, x, xscale, xsum, j - Tq, qkv, j * L)
        else:
            tile_product(wv, x, xscale, xsum, j - Tq - Tk, qkv, j * L)
    add_bias(qkv, 0, bq)
    add_bias(qkv, Tq * L, bk)
    add_bias(qkv, (Tq + Tk) * L, bv)
    q = rotated(qkv, 0, H, cos, sin)  # (H, D)
    k = rotated(qkv, Tq * L, K, cos, sin)  # (K, D)
    for g in range(K):  # the cache keeps K rotated keys and values a position
        for d in range(D):
            keys[0, g, p, d] = k[g, d]
            values[0, g, p, d] = qkv[(Tq + Tk) * L + g * D + d]
    # Each query head reads its key/value head g = hd // (H / K) at positions 0..p.
    a = np.empty(H * D, dtype=np.float32)
    scale = np.float32(1.0 / math.sqrt(D))
    for hd in numba.prange(H):
        g = hd // (H // K)
        scores = np.empty(p + 1, dtype=np.float32)
        top = np.float32(-np.inf)
        for s in range(p + 1):
            dot = np.float32(0.0)
            for d in range(D):
                dot += q[hd, d] * keys[0, g, s, d]
            scores[s] = dot * scale
            top = max(top, scores[s])
        total = np.float32(0.0)
        for s in range(p + 1):
            scores[s] = exp32(scores[s] - top)
            total += scores[s]
        for d in range(D):
            a[hd * D + d] = 0.0
        for s in range(p + 1):
            weight = scores[s] / total
            for d in range(D):
                a[hd * D + d] += weight * values[0, g, s, d]
    x, xscale, xsum = activations_of(a, q8)
    out = np.empty(wo[0].shape[0] * L, dtype=np.float32)
    for j in numba.prange(wo[0].shape[0]):
        tile_product(wo, x, xscale, xsum, j, out, j * L)
    for c in range(C):
        h[c] += out[c]

    # SwiGLU: gate's and up's tiles in one parallel loop, then down.
    x, xscale, xsum = activations_of(rms_normed(h, mlp_norm, eps), q8)
    Tg, Tu = w_gate[0].shape[0], w_up[0].shape[0]
    gate_up = np.empty((Tg + Tu) * L, dtype=np.float32)
    for j in numba.prange(Tg + Tu):
        if j < Tg:
            tile_product(w_gate, x, xscale, xsum, j, gate_up, j * L)
        else:
            tile_product(w_up, x, xscale, xsum, j - Tg, gate_up, j * L)
    F = columns(w_down)
    m = np.empty(F, dtype=np.float32)
    for f in range(F):
        z = gate_up[f]
        m[f] = z / (np.float32(1.0) + exp32(-z)) * gate_up[Tg * L + f]  # silu(gate) up
    x, xscale, xsum = activations_of(m, q8)
    for j in numba.prange(w_down[0].shape[0]):
        tile_product(w_down, x, xscale, xsum, j, out, j * L)
    for c in range(C):
        h[c] += out[c]


def applies(keys, values):
    """Take the kernel for a cache whose arrays (1, K, S_max, D) are float32 NumPy and
    C-contiguous (the kernel writes them in place); the caller (LlamaModel.forward, through
    llama.py's `one_call_a_block`) checks the rest: one token, quantised projections."""
    return all(type(a) is np.ndarray and a.dtype == np.float32 and a.ndim == 4
               and a.shape[0] == 1 and a.flags.c_contiguous for a in (keys, values))
