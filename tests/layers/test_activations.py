"""Fused activations equal their textbook formulas, and names resolve like Hugging Face's."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd as ag
from autograd import Tensor
from npplm.layers import activation, gelu, gelu_tanh, silu
from tests.autograd.strategies import STRATEGIES
from tests.tolerances import assert_close

COMPOSITES = {
    "gelu": lambda x: 0.5 * x * (1 + ag.erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + ag.tanh(math.sqrt(2 / math.pi)
                                                  * (x + 0.044715 * x * x * x))),
    "silu": lambda x: x * ag.sigmoid(x),
}
FUSED = {"gelu": gelu, "gelu_tanh": gelu_tanh, "silu": silu}


@pytest.mark.parametrize("name", sorted(FUSED))
@given(data=st.data())
def test_fused_activation_equals_composite(name, data):
    (x,) = data.draw(STRATEGIES[name]).args
    a, b = Tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
    out, ref = FUSED[name](a), COMPOSITES[name](b)
    assert_close(out, ref, kind="float64")
    out.sum().backward()
    ref.sum().backward()
    assert_close(a.grad, b.grad, kind="float64")


def test_hf_activation_names():
    assert activation("gelu") is gelu
    assert activation("gelu_new") is gelu_tanh
    assert activation("silu") is silu
    assert activation("relu") is ag.relu
    with pytest.raises(ValueError, match="unknown activation 'mish'"):
        activation("mish")


def test_silu_is_finite_far_out():
    x = Tensor(np.array([-1000.0, 1000.0], dtype=np.float32), requires_grad=True)
    y = silu(x)
    y.sum().backward()
    assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(x.grad))
