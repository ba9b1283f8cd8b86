"""The LayerNorm and RMSNorm kernels (gpu/numba_cpu/normalization.py) equal their references:
the NumPy code of npplm/layers/normalization.py, run in float64 on the same inputs."""

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor
from gpu.numba_cpu import normalization as kernels
from npplm.layers import layer_norm, rms_norm
from npplm.layers import normalization as reference
from tests.tolerances import assert_close


def inputs(n, c, seed, offset=0.0, spread=1.0):
    """x (n, c) = offset + spread * noise, parameters (c,) and an incoming gradient, float32."""
    rng = np.random.default_rng(seed)
    x = (offset + spread * rng.standard_normal((n, c))).astype(np.float32)
    w, b = (rng.standard_normal(c).astype(np.float32) for _ in range(2))
    g = rng.standard_normal((n, c)).astype(np.float32)
    return x, w, b, g


def wide(*arrays):
    """The float64 copies that the reference gets (float64 never reaches a kernel)."""
    return [a.astype(np.float64) for a in arrays]


# offset 1000, spread 0.01: a row whose float32 mean is off by 3e-5, and whose
# E[x^2] - E[x]^2 in float32 is pure rounding; the kernel must still give xhat to 1e-6.
rows_of = dict(n=st.integers(1, 40), c=st.integers(1, 300), seed=st.integers(0, 2**16),
               eps=st.sampled_from([1e-12, 1e-6, 1e-5, 0.1]),
               offset_spread=st.sampled_from([(0.0, 1.0), (0.0, 30.0), (3.0, 0.1),
                                              (1000.0, 0.01), (-1000.0, 1.0)]))


@given(**rows_of)
def test_layer_norm_kernels_equal_the_float64_reference(n, c, seed, eps, offset_spread):
    x, w, b, g = inputs(n, c, seed, *offset_spread)
    y = kernels.layer_norm_forward(x, w, b, eps)
    assert y.dtype == np.float32
    assert_close(y, reference.layer_norm_reference(*wide(x, w, b), eps), kind="float32")
    grads = kernels.layer_norm_backward(g, x, w, eps)
    expected = reference.layer_norm_grad_reference(*wide(g, x, w), eps)
    for ours, theirs in zip(grads, expected, strict=True):
        assert ours.dtype == np.float32
        assert_close(ours, theirs, kind="float32")


@given(**rows_of)
def test_rms_norm_kernels_equal_the_float64_reference(n, c, seed, eps, offset_spread):
    x, w, _, g = inputs(n, c, seed, *offset_spread)
    y = kernels.rms_norm_forward(x, w, eps)
    assert y.dtype == np.float32
    assert_close(y, reference.rms_norm_reference(*wide(x, w), eps), kind="float32")
    grads = kernels.rms_norm_backward(g, x, w, eps)
    expected = reference.rms_norm_grad_reference(*wide(g, x, w), eps)
    for ours, theirs in zip(grads, expected, strict=True):
        assert ours.dtype == np.float32
        assert_close(ours, theirs, kind="float32")


def test_nan_stays_nan_as_in_the_reference():
    x, w, b, g = inputs(3, 40, 0)
    x[0, 5], x[1, 7] = np.nan, np.inf  # inf - mean(inf) is nan too
    g[2, 3] = np.nan
    with np.errstate(invalid="ignore"):
        pairs = [(kernels.layer_norm_forward(x, w, b, 1e-5),
                  reference.layer_norm_reference(*wide(x, w, b), 1e-5)),
                 (kernels.rms_norm_forward(x, w, 1e-6),
                  reference.rms_norm_reference(*wide(x, w), 1e-6))]
        pairs += zip(kernels.layer_norm_backward(g, x, w, 1e-5),
                     reference.layer_norm_grad_reference(*wide(g, x, w), 1e-5))
        pairs += zip(kernels.rms_norm_backward(g, x, w, 1e-6),
                     reference.rms_norm_grad_reference(*wide(g, x, w), 1e-6))
    for ours, theirs in pairs:
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    y = pairs[0][0]
    assert np.isnan(y[:2]).all() and np.isfinite(y[2]).all()


def test_dispatch_only_for_large_float32_arrays():
    C = 384
    x = np.zeros((kernels.MIN_SIZE // C + 1, C), dtype=np.float32)
    w = np.ones(C, dtype=np.float32)
    assert kernels.applies(x, w, w) and kernels.applies(x, w, x)
    assert kernels.applies(x[:, ::-1], w)  # strided: copied to rows first
    assert not kernels.applies(x[:2], w)  # small
    assert not kernels.applies(x.astype(np.float64), w)  # gradient checks stay exact
    assert not kernels.applies(x, w.astype(np.float64))  # would promote: the reference
    assert not kernels.applies(x, x[:, :10])  # shapes differ
    assert not kernels.applies(np.zeros((kernels.MIN_SIZE, 0), dtype=np.float32))
    assert reference.kernels is kernels  # the primitives call these


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one core: one thread count")
@pytest.mark.parametrize("n", [2048, 37])
def test_results_do_not_depend_on_the_thread_count(n):
    # dw and db are sums over rows: on 1 or 2 threads the same bits (a resumed run
    # repeats its losses). Two huge rows of g make the sums depend on the order of the
    # additions (1e20 + 1 + ... - 1e20 + 1 + ... keeps only the ones after -1e20).
    x, w, b, g = inputs(n, 384, 1)
    g[0], g[n // 2] = 1e20, -1e20
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            runs.append([kernels.layer_norm_forward(x, w, b, 1e-5),
                         *kernels.layer_norm_backward(g, x, w, 1e-5),
                         kernels.rms_norm_forward(x, w, 1e-6),
                         *kernels.rms_norm_backward(g, x, w, 1e-6)])
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*runs, strict=True):
        np.testing.assert_array_equal(one, two)


def engine_run(norm, x, params, g):
    """Output and gradients of `norm` through the engine (Tensor, backward)."""
    leaves = [Tensor(a, requires_grad=True) for a in (x, *params)]
    out = norm(*leaves)
    out.backward(g)
    return out, [t.grad for t in leaves]


@pytest.mark.parametrize("name", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("strided", [False, True])
def test_a_gpt2_sized_norm_through_the_engine_equals_the_float64_run(name, strided):
    # (B, T, C) = (8, 256, 384): benchmarks/side_by_side_training.py's GPT-2.
    x, w, b, g = inputs(8 * 256, 2 * 384 if strided else 384, 2, offset=0.5)
    if strided:  # every other channel: not contiguous
        x, w, b, g = x[:, ::2], w[::2], b[::2], g[:, ::2]
    x, g = x.reshape(8, 256, 384), g.reshape(8, 256, 384)
    if name == "layer_norm":
        norm, params = (lambda *t: layer_norm(*t, eps=1e-5)), (w, b)
    else:
        norm, params = (lambda *t: rms_norm(*t, eps=1e-6)), (w,)
    assert kernels.applies(x, *params, g)
    out, grads = engine_run(norm, x, params, g)
    out64, grads64 = engine_run(norm, *wide(x), wide(*params), wide(g)[0])
    assert out.dtype == np.float32 and all(t.dtype == np.float32 for t in grads)
    assert_close(out, out64, kind="float32")
    for ours, theirs in zip(grads, grads64, strict=True):
        assert_close(ours, theirs, kind="float32")
