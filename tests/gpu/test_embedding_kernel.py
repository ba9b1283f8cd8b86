"""The embedding gradient's kernel (gpu/numba_cpu/embedding.py) against NumPy's np.add.at:
the same bits, repeated ids included, on one thread or several, and the dispatch rules."""

import numba
import numpy as np
import pytest

from autograd import Tensor
from gpu.numba_cpu import embedding as kernels
from npplm.layers import Embedding
from npplm.layers.embedding import embedding_grad_reference


@pytest.mark.parametrize("V, C, shape", [(8192, 384, (8, 256)), (100, 64, (3, 300)),
                                         (5, 4096, (40,)), (1000, 17, (2, 3, 200))])
@pytest.mark.parametrize("threads", [1, 2])
def test_equals_add_at_bit_for_bit(V, C, shape, threads):
    rng = np.random.default_rng(V + C)
    ids = rng.integers(0, V, shape)
    ids.flat[: min(50, ids.size)] = ids.flat[0]  # one row read many times
    g = rng.standard_normal((*shape, C)).astype(np.float32)
    assert kernels.applies(g, (V, C), np.float32)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        got = kernels.embedding_backward(g, ids, (V, C))
    finally:
        numba.set_num_threads(before)
    expected = embedding_grad_reference(g, ids, (V, C), np.float32)
    assert got.dtype == np.float32 and got.shape == (V, C)
    np.testing.assert_array_equal(got, expected)


def test_dispatch_float64_and_small_take_the_reference():
    g64 = np.zeros((4, 8192), np.float64)
    assert not kernels.applies(g64, (10, 8192), np.float64)
    assert not kernels.applies(np.zeros((2, 8), np.float32), (10, 8), np.float32)
    assert kernels.applies(np.zeros((64, 256), np.float32), (10, 256), np.float32)


def test_the_layer_sends_the_kernels_gradient_and_none_to_the_padding_row():
    emb = Embedding(300, 128, rng=np.random.default_rng(0), padding_idx=3)
    ids = np.random.default_rng(1).integers(0, 300, (4, 64))
    ids[0, :5] = 3
    out = emb(ids)
    g = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    out.backward(g)
    expected = embedding_grad_reference(g, ids, (300, 128), np.float32)
    expected[3] = 0  # the padding row reads as a constant
    np.testing.assert_array_equal(emb.weight.grad, expected)
    assert isinstance(out, Tensor) and out.dtype == np.float32
