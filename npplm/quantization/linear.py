"""QuantizedLinear: y = x W^T + b with W kept in llama.cpp's blocks, never made float32.

A GGUF file stores each weight row as blocks of integer codes with a scale (and for some
formats an offset) per block (npplm/quantization/formats.py draws every layout):

    W[r, j] = scale[r, j // G] * q[r, j]  (+ offset[r, j // G])        G = 32, or 16

Dequantising at load, as npplm did before, turns SmolLM2-135M's 98 MB Q4_1 file into
540 MB of float32 that every decoded token streams through. Kept quantised, a token reads
what the file holds. `PackedWeight.pack` lays the codes out once, at load, the way the
kernels stream them (gpu/numba_cpu/quantized.py: tiles of LANES rows interleaved, the
4-bit codes two to a byte, the scales and offsets as float32):

    4-bit (Q4_0, Q4_1, Q4_K)    codes uint8 (R/LANES, C/32, 16, LANES)     0.5 byte/weight
                                scale, offset float32 (R/LANES, C/32, LANES)  + 0.25
    8-bit (Q8_0, and Q6_K as int8 codes with 16-weight groups)
                                codes int8 (R/LANES, C/G, G, LANES)        1 byte/weight
                                scale float32 (R/LANES, C/G, LANES)        + 4/G

Q4_0's codes are stored 0..15 with offset -8 scale (d (q - 8) = d q - 8 d, both exact in
float32: d has 11 significant bits, q 4); Q6_K's 6-bit codes fit int8. So one 4-bit and one
8-bit kernel serve every format; the float32 scales cost 0.125 byte/weight more than the
file's float16 ones (Numba has no float16 arithmetic on the CPU).

The product, by the number of rows N of x (the positions in this forward pass):
    N <= 64         the kernels (`kernels.applies`, FEW_ROWS): a tile's codes are
                    unpacked once for all N rows (one row: where they are used); with
                    activations="q8" x is first quantised per 32 to int8 as llama.cpp
                    does (see the kernels' docstring), with "float32" (the default) it
                    is used as it is. A 64-row prefill ran 2.3x faster so than through
                    dequantise-and-GEMM (3.8 against 8.6 ms for a (1536, 576) Q4_1
                    weight, 2 threads, 2026-12-06), whose OpenBLAS and Numba thread pools
                    also wait on each other
    N >  64         longer inputs: W dequantised to float32 once (the kernel, in
                    parallel) and one BLAS GEMM, whose cost then dominates
`matmul_reference` is the oracle, whole-array NumPy: dequantise, multiply.

The weight is frozen (no gradient); the input gets one, dx = g W, from the dequantised
weight, so a quantised model can still pass gradients through (a LoRA on top, say).
"""

import numpy as np

from autograd import Tensor, as_array, primitive
from gpu.numba_cpu import quantized as kernels
from npplm.layers import Module
from npplm.layers.embedding import check_ids

LANES = kernels.LANES
FOUR_BIT = {"Q4_0", "Q4_1", "Q4_K"}
EIGHT_BIT = {"Q8_0", "Q6_K"}
PACKABLE = FOUR_BIT | EIGHT_BIT  # the GGUF types kept quantised at load
ACTIVATIONS = ("float32", "q8")


class PackedWeight:
    """A (R, C) weight in the kernels' layout: 4 or 8 bits a code, per-block scales.

    Built with `PackedWeight.pack(kind, q, scale, offset, group)` from the integer codes
    of npplm.quantization.formats.unpack; `dequantize()` gives the float32 matrix back
    exactly (the same products the file's formula makes).
    """

    def __init__(self, kind, shape, codes, scale, offset, group):
        self.kind = kind  # the GGUF type it came from: "Q4_1", ...
        self.shape = tuple(shape)  # (R, C), the rows not padded
        self.codes, self.scale, self.offset = codes, scale, offset
        self.group = group  # weights a scale covers: 32, or 16 (Q6_K)

    dtype = np.dtype(np.float32)  # what its rows and products come out as

    @property
    def bits(self):
        return 4 if self.kind in FOUR_BIT else 8

    @property
    def nbytes(self):
        """The bytes it keeps (codes, scales, offsets), padding rows included."""
        return sum(a.nbytes for a in (self.codes, self.scale, self.offset) if a is not None)

    @classmethod
    def pack(cls, kind, q, scale, offset, group):
        """From codes q (R, C) int8, scale and offset (R, C/group) float32 (offset None for
        symmetric formats): W = scale q (+ offset) per group."""
        R, C = q.shape
        if kind in FOUR_BIT:
            if group != 32:
                raise ValueError(f"{kind}: 4-bit codes come in groups of 32, got {group}")
            if kind == "Q4_0":  # codes -8..7 -> 0..15 and an offset of -8 d
                q = q.astype(np.int16) + 8
                offset = np.float32(-8) * scale
        elif kind not in EIGHT_BIT:
            raise ValueError(f"cannot pack {kind!r}: supported {sorted(FOUR_BIT | EIGHT_BIT)}")
        pad = -R % LANES  # whole tiles: zero rows at the end, cut off after each product
        T, NB = (R + pad) // LANES, C // group

        def tiles(a, per_block):  # (R, NB, per_block) -> (T, NB, per_block, LANES)
            a = np.pad(a, ((0, pad), (0, 0), (0, 0)))
            return np.ascontiguousarray(a.reshape(T, LANES, NB, per_block).transpose(0, 2, 3, 1))

        blocks = q.reshape(R, NB, group)
        if kind in FOUR_BIT:  # byte i of a block: code i in the low nibble, i + 16 in the high
            nibbles = blocks.astype(np.uint8)
            codes = tiles(nibbles[:, :, :16] | (nibbles[:, :, 16:] << 4), 16)
        else:
            codes = tiles(blocks.astype(np.int8), group)
        scale = tiles(np.asarray(scale, np.float32)[:, :, None], 1)[:, :, 0]  # (T, NB, L)
        if offset is not None:
            offset = tiles(np.asarray(offset, np.float32)[:, :, None], 1)[:, :, 0]
        return cls(kind, (R, C), codes, scale, offset, group)

    def dequantize(self):
        """The float32 weight (R, C)."""
        if self.bits == 4:
            w = kernels.dequantize_int4(self.codes, self.scale, self.offset, LANES)
        else:
            w = kernels.dequantize_int8(self.codes, self.scale, LANES)
        return w[:self.shape[0]]

    def rows(self, ids):
        """Rows `ids` (1-D integers) dequantised, (len(ids), C) float32."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.bits == 4:
            return kernels.gather_rows_int4(self.codes, self.scale, self.offset, ids, LANES)
        return kernels.gather_rows_int8(self.codes, self.scale, ids, LANES)

    def __repr__(self):
        return f"PackedWeight({self.kind}, shape={self.shape}, {self.nbytes / 1e6:.2f} MB)"


# --- the references -------------------------------------------------------------------------


def dequantize_reference(packed):
    """The float32 weight (R, C), in whole-array NumPy from the packed layout."""
    T, NB, per_block, L = packed.codes.shape
    codes = packed.codes.transpose(0, 3, 1, 2).reshape(T * L, NB, per_block)  # (R', NB, .)
    if packed.bits == 4:  # low nibbles are codes 0..15 of a block, high ones 16..31
        q = np.concatenate([codes & 15, codes >> 4], axis=2).astype(np.float32)
    else:
        q = codes.astype(np.float32)
    scale = packed.scale.transpose(0, 2, 1).reshape(T * L, NB, 1)
    w = scale * q
    if packed.offset is not None:
        w = w + packed.offset.transpose(0, 2, 1).reshape(T * L, NB, 1)
    return w.reshape(T * L, -1)[:packed.shape[0]]


def quantize_activations_reference(x):
    """llama.cpp's Q8_0 rounding of activations (N, C) and back, in NumPy: per block of
    32, d = max|x| / 127, x -> d round(x / d) (half to even, as its AVX code rounds)."""
    N, C = x.shape
    blocks = x.reshape(N, C // 32, 32)
    d = np.abs(blocks).max(axis=2, keepdims=True) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d > 0)
    return (d * np.round(blocks * inv)).reshape(N, C)


def matmul_reference(x, packed, activations="float32"):
    """x (N, C) @ W^T -> (N, R): what every kernel path must equal (up to rounding)."""
    if activations == "q8":
        x = quantize_activations_reference(x)
    return x @ dequantize_reference(packed).T


# --- the product ------------------------------------------------------------------------------


def matmul(x, packed, activations="float32"):
    """x (N, C) float32 @ W^T -> (N, R) by the kernels: W's blocks read as they are."""
    N, C = x.shape
    x = np.ascontiguousarray(x)
    if activations == "q8":  # llama.cpp's: integer codes, a scale and a sum per 32
        x, xscale, xsum = kernels.quantize_rows_q8(x)
    else:
        xscale = np.ones((N, C // 32), dtype=np.float32)
        xsum = x.reshape(N, C // 32, 32).sum(axis=2) if packed.bits == 4 else xscale
    if packed.bits == 4:
        product = kernels.matvec_int4 if N == 1 else kernels.matmul_int4
        y = product(packed.codes, packed.scale, packed.offset, x, xscale, xsum, LANES)
    else:
        product = kernels.matvec_int8 if N == 1 else kernels.matmul_int8
        y = product(packed.codes, packed.scale, x, xscale, LANES)
    return y[:, :packed.shape[0]]  # the padding rows of the last tile cut off


def matmul_dequantized(x, packed, activations="float32"):
    """x (N, C) @ W^T -> (N, R) with W dequantised once: one GEMM for a prefill's many rows
    (float32, by the kernel), or the reference in x's dtype (float64 gradient checks)."""
    if x.dtype == np.float32:
        w = packed.dequantize()
    else:
        w = dequantize_reference(packed).astype(x.dtype)
    if activations == "q8":
        x = quantize_activations_reference(x)
    return x @ w.T


@primitive
def quantized_linear(x, bias=None, *, weight, activations="float32"):
    """(..., C) @ W^T + b -> (..., R) with W a PackedWeight (R, C), kept quantised."""
    R, C = weight.shape
    if x.shape[-1] != C:
        raise ValueError(f"quantized_linear: input of shape {x.shape} has {x.shape[-1]} "
                         f"features but the weight {weight.shape} expects {C}")
    x2 = x.reshape(-1, C)  # (N, C), N = all of "..."
    if kernels.applies(x2):
        y = matmul(x2, weight, activations)  # decoding: a few float32 rows
    else:
        y = matmul_dequantized(x2, weight, activations)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], R)


@quantized_linear.defvjp
def quantized_linear_vjp(g, out, x, bias=None, *, weight, activations="float32"):
    # y = x W^T + b with W frozen: dx = g W (the q8 rounding of x is taken as the identity,
    # a straight-through estimate), db = sum of g's rows, no gradient for W.
    R, C = weight.shape
    g2 = g.reshape(-1, R)  # (N, R)
    w = dequantize_reference(weight).astype(g2.dtype)
    dx = (g2 @ w).reshape(x.shape)  # (N, R) @ (R, C) -> (N, C)
    db = g2.sum(axis=0) if bias is not None else None
    return dx, db


# --- the modules ------------------------------------------------------------------------------


class QuantizedLinear(Module):
    """A Linear whose weight is a PackedWeight (R, C): forward(x) = x W^T + b.

    `weight` is not a parameter (it has no gradient and no float32 copy); `bias`, when
    the family has one (Qwen2's q, k, v), stays a float32 parameter."""

    def __init__(self, weight, bias=None, activations="float32"):
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations={activations!r}: expected one of {ACTIVATIONS}")
        self.weight, self.bias, self.activations = weight, bias, activations

    def forward(self, x):
        return quantized_linear(x, self.bias, weight=self.weight, activations=self.activations)


class QuantizedEmbedding(Module):
    """An Embedding whose (V, C) table is a PackedWeight: forward(ids) = the rows, each
    dequantised on lookup (no gradient). In most GGUF files the table is also the LM
    head (tied), which then reads the same PackedWeight."""

    def __init__(self, weight, what="token id"):
        self.weight, self.what = weight, what

    def forward(self, ids):
        ids = np.asarray(as_array(ids))
        check_ids(ids, self.weight.shape[0], self.what)
        rows = self.weight.rows(ids.reshape(-1))  # (n, C)
        return Tensor(rows.reshape(*ids.shape, self.weight.shape[1]))


def is_quantized(model):
    """Whether any layer of the model keeps its weight in blocks."""
    return any(isinstance(m, (QuantizedLinear, QuantizedEmbedding))
               for _, m in model.named_modules())


def quantize_modules(model, packed, activations="float32"):
    """Swap the model's Linear and Embedding modules whose weight key ("model.layers.0
    .self_attn.q_proj.weight") is in `packed` {key: PackedWeight} for QuantizedLinear /
    QuantizedEmbedding, in place; a Linear tied to a swapped Embedding's table (an LM head)
    reads the same PackedWeight. Returns the model."""
    from npplm.layers import Embedding, Linear

    swapped = {}  # id(old weight Tensor) -> PackedWeight
    for name, module in list(model.named_modules()):
        key = f"{name}.weight"
        if key in packed and isinstance(module, (Linear, Embedding)):
            swapped[id(module.weight)] = packed[key]
            if isinstance(module, Embedding):
                new = QuantizedEmbedding(packed[key], module.what)
            else:
                new = QuantizedLinear(packed[key], module.bias, activations)
            _replace(model, name, new)
    for name, module in list(model.named_modules()):  # tied heads
        if isinstance(module, Linear) and id(module.weight) in swapped:
            _replace(model, name, QuantizedLinear(swapped[id(module.weight)], module.bias,
                                                  activations))
    return model


def _replace(root, dotted, new):
    """Set the submodule at `dotted` ("model.layers.3.mlp.up_proj") to `new`."""
    *path, last = dotted.split(".")
    parent = root
    for part in path:
        parent = parent[int(part)] if isinstance(parent, (list, tuple)) else getattr(parent,
                                                                                     part)
    if isinstance(parent, list):
        parent[int(last)] = new
    else:
        setattr(parent, last, new)
