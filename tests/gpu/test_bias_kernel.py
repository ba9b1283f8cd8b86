"""The linear layer's bias kernels (gpu/numba_cpu/bias.py) against NumPy's `y += b` and
`g.sum(axis=0)`, on one thread and two, and the layer's dispatch to them."""

import numba
import numpy as np
import pytest

from autograd import Tensor
from gpu.numba_cpu import bias as kernels
from npplm.layers import Linear
from npplm.layers.linear import linear

SHAPES = [(1024, 768), (1024, 3072), (37, 1000), (5000, 7)]


def with_threads(threads, fun, *args):
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return fun(*args)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_add_bias_equals_numpy_bit_for_bit(shape, threads):
    rng = np.random.default_rng(shape[1])
    y = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    assert kernels.applies(y, b)
    got = y.copy()
    with_threads(threads, kernels.add_bias, got, b)
    np.testing.assert_array_equal(got, y + b)  # one float32 addition an element


@pytest.mark.parametrize("shape", SHAPES)
def test_bias_grad_is_the_row_sum_and_the_same_on_any_thread_count(shape):
    rng = np.random.default_rng(shape[0])
    g = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    assert kernels.applies(g)
    one = with_threads(1, kernels.bias_grad, g)
    two = with_threads(2, kernels.bias_grad, g)
    np.testing.assert_array_equal(one, two)  # fixed blocks: a resumed run repeats its sums
    assert one.dtype == np.float32 and one.shape == shape[1:]
    exact = g.astype(np.float64).sum(axis=0)
    # a float32 sum of N terms: within N ulps of the largest partial sum
    bound = shape[0] * np.finfo(np.float32).eps * np.abs(g).astype(np.float64).sum(axis=0)
    assert np.all(np.abs(one - exact) <= bound)
    np.testing.assert_allclose(one, g.sum(axis=0), rtol=1e-4, atol=1e-3)


def test_dispatch_float64_small_and_strided_take_the_reference():
    assert not kernels.applies(np.zeros((64, 512), np.float64))
    assert not kernels.applies(np.zeros((4, 8), np.float32))
    assert not kernels.applies(np.zeros((512, 64), np.float32)[:, ::2])
    assert not kernels.applies(np.zeros((64, 512), np.float32), np.zeros(512, np.float64))
    assert kernels.applies(np.zeros((64, 512), np.float32), np.zeros(512, np.float32))


def test_the_layer_calls_the_kernels_and_keeps_its_reference_numbers(monkeypatch):
    calls = []
    for name in ("add_bias", "bias_grad"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name,
                            lambda *a, real=real, name=name: calls.append(name) or real(*a))
    rng = np.random.default_rng(0)
    layer = Linear(256, 384, rng=rng)
    layer.bias.data[:] = rng.standard_normal(384).astype(np.float32)
    x = Tensor(rng.standard_normal((4, 32, 256)).astype(np.float32), requires_grad=True)
    y = layer(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    assert calls == ["add_bias", "bias_grad"]
    w, b = layer.weight.data, layer.bias.data
    np.testing.assert_array_equal(y.data, (x.data.reshape(-1, 256) @ w.T + b).reshape(y.shape))
    np.testing.assert_allclose(layer.bias.grad, g.reshape(-1, 384).sum(axis=0), rtol=1e-5,
                               atol=1e-4)
    assert y.dtype == layer.bias.grad.dtype == np.float32
    # a small input takes NumPy's own lines
    calls.clear()
    linear(Tensor(x.data[:1, :2]), layer.weight, layer.bias)
    assert calls == []
