"""The quantised products (gpu/numba_cpu/quantized.py) against their NumPy references
(npplm/quantization/linear.py), on hypothesis-drawn shapes and formats.

Tolerances, derived rather than tuned:
  float32 activations  the kernel sums the same products as `x @ W^T` in another order,
                       so each output may differ by float32 rounding of its terms: we
                       allow 1e-5 (x 2^-24 = 6e-8 per operation, over at most a few
                       hundred terms, with margin) of sum_j |W_rj x_j|, the scale of a dot
                       product's rounding, not of its possibly cancelled value.
  Q8 activations       the same against the Q8 reference (x rounded as llama.cpp rounds
                       it, then multiplied); against the float32 product, the rounding of x
                       itself: |x - d round(x / d)| <= d / 2 with d = max|x| / 127 over
                       x's block of 32, so |y_q8 - y| <= sum_j |W_rj| d_b(j) / 2.
"""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gpu.numba_cpu import quantized as kernels
from gpu.numba_cpu.quantized import FEW_ROWS
from npplm.quantization.linear import (
    PackedWeight,
    dequantize_reference,
    matmul,
    matmul_dequantized,
    quantize_activations_reference,
)

CODES = {"Q4_0": (-8, 8), "Q4_1": (0, 16), "Q4_K": (0, 16), "Q8_0": (-128, 128),
         "Q6_K": (-32, 32)}


def random_weight(rng, kind, rows, cols):
    """A PackedWeight of random codes with float16-exact scales (as in files)."""
    group = 16 if kind == "Q6_K" else 32
    low, high = CODES[kind]
    q = rng.integers(low, high, (rows, cols)).astype(np.int8)
    scale = (rng.random((rows, cols // group)) * 0.02).astype(np.float16).astype(np.float32)
    offset = None
    if kind in ("Q4_1", "Q4_K"):
        offset = (rng.standard_normal((rows, cols // group)) * 0.01).astype(np.float32)
    return PackedWeight.pack(kind, q, scale, offset, group), q, scale, offset


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(sorted(CODES)))
    rows = draw(st.integers(1, 150))  # not a multiple of the tile: padding is cut off
    cols = 32 * draw(st.integers(1, 12))
    n = draw(st.sampled_from([1, 2, 5, FEW_ROWS, FEW_ROWS + 3]))  # kernels, then the GEMM
    return kind, rows, cols, n, draw(st.integers(0, 2**31))


@settings(deadline=None, max_examples=40)
@given(cases())
def test_dequantize_and_rows_are_the_file_formula_exactly(case):
    kind, rows, cols, _, seed = case
    rng = np.random.default_rng(seed)
    packed, q, scale, offset = random_weight(rng, kind, rows, cols)
    group = packed.group
    w = np.repeat(scale, group, axis=1) * q.astype(np.float32)
    if offset is not None:
        w = w + np.repeat(offset, group, axis=1)
    assert np.array_equal(dequantize_reference(packed), w)
    assert np.array_equal(packed.dequantize(), w)
    ids = rng.integers(0, rows, 7)
    assert np.array_equal(packed.rows(ids), w[ids])


@settings(deadline=None, max_examples=60)
@given(cases())
@example(("Q4_0", 52, 192, 64, 53))  # an activation at x / d = 65.5 exactly in float32
def test_products_equal_their_references(case):
    kind, rows, cols, n, seed = case
    rng = np.random.default_rng(seed)
    packed = random_weight(rng, kind, rows, cols)[0]
    x = rng.standard_normal((n, cols)).astype(np.float32)
    x[:, :32] *= 50  # a block of outliers, as activations have
    w = dequantize_reference(packed).astype(np.float64)
    scale = np.abs(x.astype(np.float64)) @ np.abs(w).T  # sum_j |W_rj x_j|
    exact = x.astype(np.float64) @ w.T
    for activations in ("float32", "q8"):
        # The reference's product in float64; x's Q8 rounding decided in float32, as
        # llama.cpp (and the kernels) decide it: x / d = 65.5 in float32 may be 65.4999 in
        # float64, a tie that rounds the other way.
        xr = quantize_activations_reference(x) if activations == "q8" else x
        ref = xr.astype(np.float64) @ w.T  # matmul_reference, in float64
        for product in (matmul, matmul_dequantized):
            y = product(x, packed, activations)
            assert y.dtype == np.float32 and y.shape == (n, rows)
            assert np.all(np.abs(y - ref) <= 1e-5 * scale + 1e-30)
    # Q8 activations against float32 ones: the rounding of x, d / 2 per element.
    d = np.abs(x.reshape(n, -1, 32)).max(axis=2) / 127  # (n, C/32)
    bound = (d.repeat(32, axis=1) / 2) @ np.abs(w).T
    assert np.all(np.abs(matmul(x, packed, "q8") - exact) <= bound + 1e-5 * scale)


def test_q8_activations_are_llama_cpp_rounding():
    x = np.array([np.arange(32) - 15.5, np.zeros(32)], dtype=np.float32)
    xq, d, dsum = kernels.quantize_rows_q8(x)
    assert d[0, 0] == np.float32(15.5) / np.float32(127) and d[1, 0] == 0
    assert np.array_equal(xq[0], np.round(x[0] * (np.float32(1) / d[0, 0])))
    assert np.all(xq[1] == 0) and dsum[1, 0] == 0  # an all-zero block: no division by 0
    assert dsum[0, 0] == d[0, 0] * xq[0].sum()
