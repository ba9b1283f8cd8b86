"""Embedding and Linear: shapes, gradients of repeated ids, and range errors."""

import numpy as np
import pytest

from autograd import Tensor
from npplm.layers import Embedding, Linear, check_ids
from npplm.layers.linear import FEW_ROWS, linear


def test_embedding_gradient_adds_up_over_repeated_ids():
    emb = Embedding(5, 3)
    out = emb(np.array([[1, 1, 4]]))
    assert out.shape == (1, 3, 3)
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad[:, 0], [0, 2, 0, 0, 1])


@pytest.mark.parametrize("bad", [5, -1, 100])
def test_ids_outside_the_table_name_the_value_and_the_limit(bad):
    with pytest.raises(IndexError, match=rf"token id {bad} is out of range for a table of 5 "
                                         r"rows \(valid: 0..4\)"):
        Embedding(5, 3)(np.array([0, bad]))


def test_float_ids_are_refused():
    with pytest.raises(TypeError, match="position ids must be integers, got dtype float64"):
        check_ids(np.array([1.0]), 4, "position id")


def test_linear_stores_out_by_in_and_computes_x_w_transposed():
    lin = Linear(3, 2, rng=np.random.default_rng(0))
    assert lin.weight.shape == (2, 3) and lin.bias.shape == (2,)
    x = np.random.default_rng(1).standard_normal((4, 5, 3)).astype(np.float32)
    y = lin(Tensor(x))
    np.testing.assert_allclose(y.numpy(), x @ lin.weight.data.T + lin.bias.data, rtol=1e-6)
    assert y.dtype == np.float32
    assert Linear(3, 2, bias=False).bias is None


@pytest.mark.parametrize("rows", [1, 2, FEW_ROWS, FEW_ROWS + 1, 300])
def test_linear_gives_x_w_transposed_on_either_side_of_the_few_rows_switch(rows):
    # Up to FEW_ROWS rows the forward computes (W x^T)^T, beyond it x W^T: the same
    # products, so equal to rounding, C-contiguous and float32 either way.
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 1, 48), dtype=np.float32)
    w = rng.standard_normal((40, 48), dtype=np.float32)
    b = rng.standard_normal(40, dtype=np.float32)
    y = linear(x, w, b).numpy()
    want = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert y.shape == (rows, 1, 40) and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
