"""GGUF's block formats: llama.cpp's quantised weights, byte by byte, in NumPy.

A quantised (out, in) matrix is stored row by row, and each row is cut into blocks of
consecutive weights along the `in` axis (never across rows): 32 weights per block, or 256
in the "K-quants" (which therefore need a row length that is a multiple of 256). A block
is a few bytes of scales followed by small integer codes, and every format here decodes
with one formula,

    w = scale * q  (+ offset)        per weight, in float32, in that order,

one (scale, offset) shared by each `group` of consecutive weights. `unpack` returns those
integer codes q, scales and offsets, so that a kernel can take dot products with the codes
and apply a scale once per group; `dequantize` evaluates the formula; both equal gguf-py's
`gguf.quants.dequantize` bit for bit (tests/quantization/test_formats.py). Byte offsets
below are within one block; fp16 is an IEEE half, little-endian like everything in GGUF.

Q8_0   32 weights in 34 bytes                           group 32, q in -128..127
         0  d      fp16
         2  q[32]  int8
       w = d q

Q4_0   32 weights in 18 bytes                           group 32, q in -8..7
         0  d      fp16
         2  16 bytes of nibbles: byte i holds weight i in its low nibble, weight i + 16 in
            its high nibble; a nibble n (0..15) is the code q = n - 8
       w = d q

Q4_1   32 weights in 20 bytes                           group 32, q in 0..15
         0  d      fp16
         2  m      fp16   the block's minimum
         4  16 bytes of nibbles, as Q4_0, the nibble itself is q
       w = d q + m

Q4_K   256 weights in 144 bytes: a super-block of 8 sub-blocks of 32 weights
                                                        group 32, q in 0..15
         0  d      fp16   scales the sub-block scales
         2  dmin   fp16   scales the sub-block minimums
         4  12 bytes: a 6-bit scale sc[j] and a 6-bit minimum m[j] for each sub-block j:
              bytes 0..3   sc[0..3] in bits 0-5; bits 4-5 of sc[4..7] in bits 6-7
              bytes 4..7   m[0..3]  in bits 0-5; bits 4-5 of m[4..7]  in bits 6-7
              bytes 8..11  bits 0-3 of sc[4..7] in the low nibble, of m[4..7] in the high
            (llama.cpp's get_scale_min_k4)
        16  128 bytes of nibbles in four runs of 32 bytes: run c holds sub-block 2c in its
            low nibbles and sub-block 2c + 1 in its high nibbles
       w = (d sc[j]) q - (dmin m[j])     for the weights of sub-block j
       so here scale = d sc[j] and offset = -(dmin m[j]): the two products are rounded to
       float32 as llama.cpp rounds them, and x - y is x + (-y) exactly in IEEE arithmetic,
       so `scale * q + offset` is the decoder's sum bit for bit.

Q6_K   256 weights in 210 bytes: 16 groups of 16      group 16, q in -32..31
         0  ql[128]    the low 4 bits of each 6-bit code u (0..63)
       128  qh[64]     its high 2 bits
       192  sc[16]     int8, one scale per group of 16 weights
       208  d          fp16
       The block is two halves of 128 weights; half h uses ql[64h : 64h+64] and
       qh[32h : 32h+32]. Weight 32 j + l of a half (j = 0..3, l = 0..31) takes
            its low 4 bits from  nibble j // 2 (low, high) of ql byte 32 (j % 2) + l
            its high 2 bits from bits 2j, 2j + 1 of qh byte l
       w = (d sc[g]) q,   q = u - 32,   g = the weight's group of 16

F32, F16 and BF16 are plain floats (BF16: the top 16 bits of a float32); `unpack` refuses
them, `dequantize` and `quantize` convert.

The quantisers (`quantize`). Q8_0, Q4_0 and Q4_1 reproduce ggml's reference quantisers
(quantize_row_q8_0_ref, ... in ggml-quants.c) as gguf-py's `gguf.quants.quantize` writes
them, bit for bit, roundings included. Each computes the block's d in float32, multiplies
by 1/d (codes against the unrounded d), and only then rounds d to fp16 for storage:

    Q8_0  d = max|x| / 127                 q = round(x / d), halves away from zero (roundf)
    Q4_0  d = x_peak / -8                  q = trunc(x / d + 8.5), at most 15
          (x_peak: the weight of largest magnitude, sign kept, so that it lands on -8,
          the long end of -8..7)
    Q4_1  d = (max - min) / 15, m = min    q = trunc((x - min) / d + 0.5), at most 15

Q4_K and Q6_K are ours (gguf-py quantises neither; llama.cpp's quantize_row_q4_K_ref and
quantize_row_q6_K_ref search harder). Q4_K, per super-block:
    1. each sub-block gets a float scale s and minimum m >= 0 (m is stored unsigned, so
       the grid s q - m always reaches down to zero or below): from its min and max, then
       a few stretched grids each refitted by least squares; the one with the smallest
       squared error wins (the idea of llama.cpp's make_qkx2_quants, unweighted);
    2. d = max s / 63 and dmin = max m / 63, rounded to fp16; sc = round(s / d) and
       m = round(m / dmin), 6 bits each;
    3. the codes against the scale and minimum the decoder will use:
       q = round((x + dmin m) / (d sc)) in 0..15.
Q6_K, per super-block: each group of 16 gets s = x_peak / -32 (Q4_0's trick: the largest
weight lands on -32); d = (the s of largest magnitude) / -128 in fp16, sc = round(s / d)
in -128..127; then q = round(x / (d sc)) in -32..31. Rounding: half to even (np.rint).

Measured on unit Gaussian weights (256 x 4096; tests/quantization/test_formats.py checks
the ratios): RMS error Q4_0 0.0860, Q4_1 0.0782, our Q4_K 0.0714 (0.91 of Q4_1's, in 4.5
bits per weight to Q4_1's 5; without step 1's search, 1.00 of it), our Q6_K 0.0188, Q8_0
0.0054.
"""

import dataclasses
import math
import typing

import numpy as np


@dataclasses.dataclass(frozen=True)
class Format:
    """One GGUF tensor type."""

    name: str  # llama.cpp's name: "Q4_K"
    ggml_type: int  # its gguf.GGMLQuantizationType value, the tag in a GGUF tensor info
    block: int  # weights per block (1 for the plain floats)
    nbytes: int  # bytes per block
    group: int | None  # weights sharing one scale; None for the plain floats


FORMATS = {f.name: f for f in [
    Format("F32", 0, 1, 4, None),
    Format("F16", 1, 1, 2, None),
    Format("BF16", 30, 1, 2, None),
    Format("Q8_0", 8, 32, 2 + 32, 32),
    Format("Q4_0", 2, 32, 2 + 16, 32),
    Format("Q4_1", 3, 32, 2 + 2 + 16, 32),
    Format("Q4_K", 12, 256, 2 + 2 + 12 + 128, 32),
    Format("Q6_K", 14, 256, 128 + 64 + 16 + 2, 16),
]}


class Unpacked(typing.NamedTuple):
    """A block-quantised tensor as codes and scales: w = scale * q (+ offset) per group."""

    q: np.ndarray  # int8 (rows, cols): the integer codes
    scale: np.ndarray  # float32 (rows, cols // group)
    offset: np.ndarray | None  # float32 (rows, cols // group); None in symmetric formats
    group: int  # consecutive weights sharing one scale and offset


# --- shapes and checks ----------------------------------------------------------------------


def _format(kind):
    """A Format from its name (or anything with a .name: a Format, a GGMLQuantizationType)."""
    name = getattr(kind, "name", kind)
    if not isinstance(name, str) or name not in FORMATS:
        raise ValueError(f"unknown tensor type {name!r} (known: {', '.join(FORMATS)})")
    return FORMATS[name]


def row_bytes(kind, cols):
    """Bytes of one row of `cols` weights stored as `kind`."""
    fmt = _format(kind)
    if cols % fmt.block:
        need = " (K-quants need cols % 256 == 0)" if fmt.block == 256 else ""
        raise ValueError(f"a row of {cols} weights is not a whole number of {fmt.name} "
                         f"blocks of {fmt.block}{need}")
    return cols // fmt.block * fmt.nbytes


def _split_shape(shape, fmt):
    """shape (..., cols) -> (leading dims, cols), refusing a cols that is not whole blocks."""
    shape = tuple(int(n) for n in shape)
    if not shape:
        raise ValueError("a tensor shape needs at least one dimension (cols)")
    if shape[-1] % fmt.block:
        need = " (K-quants need cols % 256 == 0)" if fmt.block == 256 else ""
        raise ValueError(f"shape {shape}: {shape[-1]} columns is not a whole number of "
                         f"{fmt.name} blocks of {fmt.block}{need}")
    return shape[:-1], shape[-1]


def _blocks(raw, fmt, shape):
    """Raw bytes of a tensor of `shape` -> (n_blocks, fmt.nbytes) uint8, checked."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(raw, np.uint8)
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise ValueError(f"raw {fmt.name} data must be uint8 bytes, got {raw.dtype}")
    lead, cols = _split_shape(shape, fmt)
    need = math.prod(lead) * row_bytes(fmt, cols)
    if raw.size != need:
        raise ValueError(f"a {fmt.name} tensor of shape {tuple(shape)} is {need} bytes, "
                         f"got {raw.size}")
    return np.ascontiguousarray(raw).reshape(-1, fmt.nbytes)


def _fp16(blocks, start):
    """The fp16 at byte `start` of every block, as (n_blocks, 1) float32 (exactly)."""
    return blocks[:, start:start + 2].copy().view("<f2").astype(np.float32)


def _fp16_bytes(value):
    """(n_blocks, 1) float32 -> (n_blocks, 2) uint8: the value rounded to fp16 (to nearest)."""
    return value.astype("<f2").view(np.uint8)


def _as_fp16(value):
    """A float32 array rounded to the nearest fp16, kept as float32: what a decoder reads."""
    return value.astype(np.float16).astype(np.float32)


def _unpack_nibbles(qs, run):
    """(N, k * run) bytes -> (N, 2 * k * run) values 0..15. Each run of `run` bytes holds
    `run` weights in its low nibbles, then the next `run` weights in its high nibbles."""
    n = qs.shape[0]
    qs = qs.reshape(n, -1, 1, run)  # (N, k, 1, run)
    return np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, -1)  # (N, k, 2, run)


def _pack_nibbles(q, run):
    """The inverse of _unpack_nibbles: (N, 2 * k * run) values 0..15 -> (N, k * run)."""
    n = q.shape[0]
    q = q.astype(np.uint8).reshape(n, -1, 2, run)  # (N, k, low/high, run)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, -1)


def _reciprocal(d):
    """1 / d in float32, and 0 where d is 0 (an all-zero block gets all-zero codes)."""
    return np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)


def _round_half_away(x):
    """Round to nearest, halves away from zero (C's roundf; np.rint sends halves to even)."""
    whole = np.trunc(x)
    return np.where(np.abs(x - whole) == 0.5, whole + np.sign(x), np.rint(x))


# --- the 32-weight formats: Q8_0, Q4_0, Q4_1 ------------------------------------------------


def _unpack_q8_0(b):
    """(N, 34) bytes -> q (N, 32), scale (N, 1), no offset."""
    return b[:, 2:].view(np.int8), _fp16(b, 0), None


def _quantize_q8_0(x):
    """(N, 32) float32 -> (N, 34) bytes, as ggml's quantize_row_q8_0_ref."""
    d = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)  # (N, 1)
    q = _round_half_away(x * _reciprocal(d)).astype(np.int8)  # (N, 32) in -127..127
    return np.concatenate([_fp16_bytes(d), q.view(np.uint8)], axis=1)


def _unpack_q4_0(b):
    """(N, 18) bytes -> q (N, 32) in -8..7, scale (N, 1), no offset."""
    q = _unpack_nibbles(b[:, 2:], 16).astype(np.int8) - np.int8(8)
    return q, _fp16(b, 0), None


def _quantize_q4_0(x):
    """(N, 32) float32 -> (N, 18) bytes, as ggml's quantize_row_q4_0_ref."""
    peak = np.take_along_axis(x, np.abs(x).argmax(axis=1, keepdims=True), axis=1)  # (N, 1)
    d = peak / np.float32(-8)
    nibble = np.minimum(np.trunc(x * _reciprocal(d) + np.float32(8.5)), 15)  # q + 8, 0..15
    return np.concatenate([_fp16_bytes(d), _pack_nibbles(nibble, 16)], axis=1)


def _unpack_q4_1(b):
    """(N, 20) bytes -> q (N, 32) in 0..15, scale (N, 1), offset (N, 1)."""
    return _unpack_nibbles(b[:, 4:], 16).astype(np.int8), _fp16(b, 0), _fp16(b, 2)


def _quantize_q4_1(x):
    """(N, 32) float32 -> (N, 20) bytes, as ggml's quantize_row_q4_1_ref."""
    lo = x.min(axis=1, keepdims=True)  # (N, 1)
    d = (x.max(axis=1, keepdims=True) - lo) / np.float32(15)
    q = np.minimum(np.trunc((x - lo) * _reciprocal(d) + np.float32(0.5)), 15)
    return np.concatenate([_fp16_bytes(d), _fp16_bytes(lo), _pack_nibbles(q, 16)], axis=1)


# --- Q4_K -----------------------------------------------------------------------------------


def _unpack_scales_k4(packed):
    """(N, 12) bytes -> sc, m (N, 8) uint8, 6 bits each (the layout in the docstring)."""
    a, b, c = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]  # (N, 4) each
    sc = np.concatenate([a & 63, (c & 0x0F) | ((a >> 6) << 4)], axis=1)
    m = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return sc, m


def _pack_scales_k4(sc, m):
    """The inverse of _unpack_scales_k4: sc, m (N, 8) values 0..63 -> (N, 12) bytes."""
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    a = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    b = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    c = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return np.concatenate([a, b, c], axis=1)


def _unpack_q4_k(b):
    """(N, 144) bytes -> q (N, 256) in 0..15, scale and offset (N, 8)."""
    d, dmin = _fp16(b, 0), _fp16(b, 2)  # (N, 1) each
    sc, m = _unpack_scales_k4(b[:, 4:16])  # (N, 8) each
    q = _unpack_nibbles(b[:, 16:], 32).astype(np.int8)  # (N, 4 runs * 2 * 32)
    return q, d * sc.astype(np.float32), -(dmin * m.astype(np.float32))


def _codes_affine(x, s, m):
    """The nearest 4-bit codes on the grid s q - m: x (..., 32), s and m (...) -> q 0..15."""
    s, m = s[..., None], m[..., None]
    q = np.divide(x + m, s, out=np.zeros_like(x), where=s > 0)
    return np.clip(np.rint(q), 0, 15)


def _squared_error(x, s, m):
    q = _codes_affine(x, s, m)
    return ((s[..., None] * q - m[..., None] - x) ** 2).sum(axis=-1)


# Grids tried per sub-block: the min-to-max span cut into 15 + stretch steps, then refitted.
STRETCHES = np.linspace(-1, 1, 9)


def _fit_sub_blocks(x):
    """A scale s >= 0 and minimum m >= 0 per sub-block, so that s q - m (q in 0..15) fits
    it with a small squared error. x (N, 8, 32) -> s, m (N, 8) float32.

    Start from the plain grid (lowest point min(x, 0), highest max(x)). Then, for each
    stretch, cut the span into 15 + stretch steps, round to codes, and refit (s, m) to
    those codes by least squares (x ~ s q + b, b = -m clamped to <= 0); keep whichever
    grid, measured with its own nearest codes, has the smallest squared error.
    """
    lo = np.minimum(x.min(axis=-1), 0)  # (N, 8): m is stored unsigned, the grid reaches 0
    span = x.max(axis=-1) - lo
    best_s, best_m = span / np.float32(15), -lo
    best = _squared_error(x, best_s, best_m)
    n = np.float32(x.shape[-1])
    for stretch in STRETCHES:
        inv = np.divide(np.float32(15 + stretch), span, out=np.zeros_like(span),
                        where=span > 0)
        q = np.clip(np.rint((x - lo[..., None]) * inv[..., None]), 0, 15)  # (N, 8, 32)
        # Least squares for x ~ s q + b: the 2x2 normal equations, solved by Cramer's rule.
        sq, sqq = q.sum(-1), (q * q).sum(-1)  # integers, exact in float32
        sx, sqx = x.sum(-1), (q * x).sum(-1)
        det = n * sqq - sq * sq  # 0 only when all 32 codes are equal
        ok = det > 0
        s = np.divide(n * sqx - sq * sx, det, out=np.zeros_like(det), where=ok)
        b = np.divide(sqq * sx - sq * sqx, det, out=np.zeros_like(det), where=ok)
        # A positive intercept cannot be stored: refit the scale alone with b = 0.
        up = b > 0
        s = np.where(up, np.divide(sqx, sqq, out=np.zeros_like(sqq), where=sqq > 0), s)
        s, m = np.maximum(s, 0), np.maximum(-b, 0)
        err = np.where(ok, _squared_error(x, s, m), np.inf)
        better = err < best
        best_s, best_m, best = (np.where(better, s, best_s), np.where(better, m, best_m),
                                np.where(better, err, best))
    return best_s.astype(np.float32), best_m.astype(np.float32)


def _six_bit(value, unit):
    """round(value / unit) clipped to 0..63, 0 where unit is 0: value (N, 8), unit (N, 1)."""
    ratio = np.divide(value, unit, out=np.zeros_like(value), where=unit > 0)
    return np.clip(np.rint(ratio), 0, 63).astype(np.uint8)


def _quantize_q4_k(x):
    """(N, 256) float32 -> (N, 144) bytes: our Q4_K quantiser (the module docstring)."""
    n = x.shape[0]
    x = x.reshape(n, 8, 32)  # (N, sub-block, weight)
    s, m = _fit_sub_blocks(x)  # 1. (N, 8) each
    d = _as_fp16(s.max(axis=1, keepdims=True) / np.float32(63))  # 2. (N, 1)
    dmin = _as_fp16(m.max(axis=1, keepdims=True) / np.float32(63))
    sc, mq = _six_bit(s, d), _six_bit(m, dmin)  # (N, 8) each
    scale = d * sc.astype(np.float32)  # 3. exactly what the decoder will form
    low = dmin * mq.astype(np.float32)
    q = _codes_affine(x, scale, low).reshape(n, 256)
    return np.concatenate([_fp16_bytes(d), _fp16_bytes(dmin), _pack_scales_k4(sc, mq),
                           _pack_nibbles(q, 32)], axis=1)


# --- Q6_K -----------------------------------------------------------------------------------

_QH_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)  # bits of j = 0..3


def _unpack_q6_k(b):
    """(N, 210) bytes -> q (N, 256) in -32..31, scale (N, 16), no offset."""
    n = b.shape[0]
    ql = b[:, :128].reshape(n, 2, 2, 32)  # (N, half, j % 2, l)
    qh = b[:, 128:192].reshape(n, 2, 1, 32)  # (N, half, 1, l)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # (N, half, j, l): j = 0, 1, 2, 3
    high = (qh >> _QH_SHIFTS) & 3  # (N, half, j, l)
    q = (low | (high << 4)).astype(np.int8) - np.int8(32)  # 6-bit code u - 32
    sc = b[:, 192:208].view(np.int8).astype(np.float32)  # (N, 16)
    return q.reshape(n, 256), _fp16(b, 208) * sc, None


def _quantize_q6_k(x):
    """(N, 256) float32 -> (N, 210) bytes: our Q6_K quantiser (the module docstring)."""
    n = x.shape[0]
    g = x.reshape(n, 16, 16)  # (N, group, weight)
    peak = np.take_along_axis(g, np.abs(g).argmax(axis=2)[..., None], axis=2)[..., 0]
    s = peak / np.float32(-32)  # (N, 16): the peak lands on code -32
    big = np.take_along_axis(s, np.abs(s).argmax(axis=1)[:, None], axis=1)  # (N, 1)
    d = _as_fp16(big / np.float32(-128))  # the largest scale lands on -128
    ratio = np.divide(s, d, out=np.zeros_like(s), where=d != 0)
    sc = np.clip(np.rint(ratio), -128, 127).astype(np.int8)  # (N, 16)
    scale = (d * sc.astype(np.float32))[..., None]  # (N, 16, 1), as the decoder forms it
    q = np.clip(np.rint(np.divide(g, scale, out=np.zeros_like(g), where=scale != 0)),
                -32, 31)
    u = (q + 32).astype(np.uint8).reshape(n, 2, 4, 32)  # (N, half, j, l), 0..63
    ql = (u[:, :, 0:2] & 0x0F) | ((u[:, :, 2:4] & 0x0F) << 4)  # (N, half, j % 2, l)
    qh = np.bitwise_or.reduce((u >> 4) << _QH_SHIFTS, axis=2)  # (N, half, l)
    return np.concatenate([ql.reshape(n, 128), qh.reshape(n, 64), sc.view(np.uint8),
                           _fp16_bytes(d)], axis=1)


# --- the plain floats -----------------------------------------------------------------------


def _bf16_bits(w):
    """float32 -> bfloat16 bits (uint16): rounded to nearest, ties to even; NaN stays NaN."""
    bits = w.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = (bits & 0x7FFFFFFF) > 0x7F800000  # rounding could carry a NaN into an infinity
    return np.where(nan, (bits >> 16) | 0x40, rounded).astype(np.uint16)


def _float_bytes(w, fmt):
    if fmt.name == "F32":
        return w.astype("<f4").view(np.uint8)
    if fmt.name == "F16":
        return w.astype("<f2").view(np.uint8)
    return _bf16_bits(w).astype("<u2").view(np.uint8)


def _float_values(raw, fmt):
    if fmt.name == "F32":
        return raw.view("<f4")
    if fmt.name == "F16":
        return raw.view("<f2").astype(np.float32)
    return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)


# --- the interface --------------------------------------------------------------------------

_UNPACK = {"Q8_0": _unpack_q8_0, "Q4_0": _unpack_q4_0, "Q4_1": _unpack_q4_1,
           "Q4_K": _unpack_q4_k, "Q6_K": _unpack_q6_k}
_QUANTIZE = {"Q8_0": _quantize_q8_0, "Q4_0": _quantize_q4_0, "Q4_1": _quantize_q4_1,
             "Q4_K": _quantize_q4_k, "Q6_K": _quantize_q6_k}


def unpack(raw, kind, shape):
    """The codes and scales of a block-quantised tensor, such that
    `scale * q (+ offset)`, per group of `group` weights, is `dequantize` bit for bit.

    raw: its bytes (uint8, flat or (rows, row_bytes)); shape: (rows, cols) in NumPy order
    (any (..., cols) works; the leading dims are kept). Returns Unpacked(q, scale, offset,
    group): q int8 (rows, cols), scale and offset float32 (rows, cols // group), offset
    None for the symmetric formats (Q8_0, Q4_0, Q6_K).
    """
    fmt = _format(kind)
    if fmt.name not in _UNPACK:
        raise ValueError(f"{fmt.name} is a plain float type, not a block format: "
                         f"use dequantize")
    lead, cols = _split_shape(shape, fmt)
    q, scale, offset = _UNPACK[fmt.name](_blocks(raw, fmt, shape))
    groups = (*lead, cols // fmt.group)
    return Unpacked(q.reshape(*lead, cols), scale.reshape(groups),
                    None if offset is None else offset.reshape(groups), fmt.group)


def dequantize(raw, kind, shape):
    """A tensor's bytes -> float32 array of `shape`: w = scale * q (+ offset) per weight
    for the block formats (`unpack`), a plain conversion for F32, F16 and BF16 (F32 is a
    view of `raw`, not a copy: a memory-mapped file's weights stay on disk until read)."""
    fmt = _format(kind)
    if fmt.group is None:
        return _float_values(_blocks(raw, fmt, shape).reshape(-1), fmt).reshape(shape)
    q, scale, offset, group = unpack(raw, fmt, shape)
    q = q.reshape(*scale.shape, group).astype(np.float32)  # (rows, groups, group)
    w = scale[..., None] * q
    if offset is not None:
        w = w + offset[..., None]
    return w.reshape(shape)


def quantize(w, kind):
    """float weights (rows, cols) -> their bytes as `kind`, uint8 (rows, row_bytes(kind,
    cols)). Any (..., cols) works: the leading dims are kept. Q8_0, Q4_0 and Q4_1 equal
    gguf.quants.quantize bit for bit; Q4_K and Q6_K are our own quantisers (docstring)."""
    fmt = _format(kind)
    w = np.asarray(w, dtype=np.float32)
    lead, cols = _split_shape(w.shape, fmt)
    nbytes = row_bytes(fmt, cols)
    if fmt.group is None:
        return _float_bytes(w, fmt).reshape(*lead, nbytes)
    if not np.isfinite(w).all():
        raise ValueError(f"cannot quantise to {fmt.name}: the weights hold NaN or inf")
    blocks = np.ascontiguousarray(w).reshape(-1, fmt.block)  # (N, block)
    return _QUANTIZE[fmt.name](blocks).reshape(*lead, nbytes)
