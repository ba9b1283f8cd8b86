"""The causal attention CUDA kernel (gpu/numba_cuda/attention.py) against its reference.

As in test_cuda_kernels.py: CuPy arrays on a device, NumPy arrays on Numba's CUDA simulator
elsewhere (tests/conftest.py). The simulator runs each CUDA thread (here one a query row)
as a Python thread, so the shapes are tiny; they still cover every branch of the kernels:
rows longer and shorter than a block of threads, padding keys, rows that read no key at
all, a cached prefix, fewer keys than queries, and strided inputs.
"""

import numpy as np
import pytest

from gpu.numba_cuda import attention as cuda_attention
from gpu.numba_cuda.attention import MAX_HEAD_DIM
from npplm.layers.attention import causal_attention_grad_reference, causal_attention_reference
from tests.gpu.test_cuda_kernels import device, f64, host, random
from tests.tolerances import assert_close

MIN32 = np.finfo(np.float32).min


def projections(B, H, T, S, D, seed, strided=True):
    """q (B, H, T, D) and k, v (B, H, S, D); strided: views of one (B, T, H D) and one
    (B, S, 2 H D) projection, as split heads make them."""
    q = random((B, T, H * D), seed, 1.0).reshape(B, T, H, D).transpose(0, 2, 1, 3)
    kv = random((B, S, 2 * H * D), seed + 1, 1.0).reshape(B, S, 2, H, D)
    k, v = kv[:, :, 0].transpose(0, 2, 1, 3), kv[:, :, 1].transpose(0, 2, 1, 3)
    if not strided:
        q, k, v = (np.ascontiguousarray(a) for a in (q, k, v))
    return q, k, v


def mask(*rows):
    return np.array(rows, dtype=bool)


CASES = {  # name: (T, S, D, keep (B=2, S), strided)
    "causal": (5, 5, 4, mask([1] * 5, [1] * 5), False),
    "causal, strided": (5, 5, 8, mask([1] * 5, [1] * 5), True),
    # Row 0's first queries read only padding: uniform over all S keys, as the bias gives.
    "left padding": (4, 4, 4, mask([0, 0, 1, 1], [1, 1, 1, 1]), True),
    "right padding": (3, 3, 4, mask([1, 1, 0], [1, 0, 0]), True),
    "a row of nothing": (3, 3, 4, mask([0, 0, 0], [0, 1, 1]), True),
    "cached prefix": (3, 6, 4, mask([0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1]), True),
    "decoding": (1, 7, 8, mask([1] * 7, [0, 0, 1, 1, 1, 0, 1]), True),
    "fewer keys than queries": (4, 2, 4, mask([1, 1], [0, 1]), True),  # early rows: none
}


def reads_nothing(T, S, keep):
    """(B, 1, T) True where a query row has no key to read."""
    allowed = np.tril(np.ones((T, S), dtype=bool), k=S - T)  # (T, S)
    return ~(allowed[None] & keep[:, None, :]).any(axis=-1)[:, None, :]


@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_equal_the_reference(case):
    T, S, D, keep, strided = CASES[case]
    B, H = 2, 2
    q, k, v = projections(B, H, T, S, D, seed=len(case), strided=strided)
    scale = 1 / np.sqrt(D)
    out, lse = (host(a) for a in cuda_attention.attention_forward(
        device(q), device(k), device(v), device(keep), scale))
    want_out, want_lse = causal_attention_reference(f64(q), f64(k), f64(v), keep, scale)
    assert out.dtype == lse.dtype == np.float32
    assert out.shape == (B, H, T, D) and lse.shape == (B, H, T)
    assert_close(out, want_out, "float32")
    # A row with no key has every score at the bias' minimum, which is float64's in the
    # float64 reference; the kernel's is float32's, as the float32 reference gives.
    empty = np.broadcast_to(reads_nothing(T, S, keep), lse.shape)
    lse32 = causal_attention_reference(q, k, v, keep, np.float32(scale))[1]
    assert (lse32[empty] == MIN32).all() and (lse[empty] == MIN32).all()
    assert_close(lse[~empty], want_lse[~empty], "float32")

    g_out, g_lse = random(out.shape, 20, 1.0), random(lse.shape, 21, 1.0)
    got = cuda_attention.attention_backward(
        device(g_out), device(g_lse), device(q), device(k), device(v), device(keep),
        device(out), device(lse), scale)
    want = causal_attention_grad_reference(f64(g_out), f64(g_lse), f64(q), f64(k), f64(v),
                                           keep, scale)
    for name, a, b in zip("qkv", got, want, strict=True):
        a = host(a)
        assert a.dtype == np.float32 and a.shape == b.shape, f"d{name}"
        assert_close(a, b, "float32")


def test_the_cases_have_rows_that_read_nothing():
    # The masked-row branch of the kernels is reached by the cases meant to reach it.
    for name in ("left padding", "a row of nothing", "fewer keys than queries"):
        T, S, _, keep, _ = CASES[name]
        assert reads_nothing(T, S, keep).any(), name
    T, S, _, keep, _ = CASES["causal"]
    assert not reads_nothing(T, S, keep).any()


def test_a_nan_makes_its_row_nan_and_no_earlier_one():
    q, k, v = projections(1, 1, 4, 4, 4, seed=0, strided=False)
    q[0, 0, 2, 1] = np.nan
    out, lse = (host(a) for a in cuda_attention.attention_forward(
        device(q), device(k), device(v), device(np.ones((1, 4), bool)), 0.5))
    assert np.isnan(out[0, 0, 2]).all() and np.isnan(lse[0, 0, 2])
    assert np.isfinite(out[0, 0, :2]).all() and np.isfinite(lse[0, 0, :2]).all()


def test_a_head_too_wide_for_the_accumulators_is_named():
    D = MAX_HEAD_DIM + 1
    q = np.zeros((1, 1, 1, D), np.float32)
    keep = np.ones((1, 1), bool)
    with pytest.raises(ValueError, match=f"MAX_HEAD_DIM = {MAX_HEAD_DIM}, not D = {D}"):
        cuda_attention.attention_forward(q, q, q, keep, 1.0)
    with pytest.raises(ValueError, match=f"not D = {D}"):
        cuda_attention.attention_backward(q, q[..., 0], q, q, q, keep, q, q[..., 0], 1.0)
