"""Fused LayerNorm / RMSNorm equal their composite versions (forward and gradients)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd as ag
from autograd import Tensor
from npplm.layers import LayerNorm, RMSNorm, layer_norm, rms_norm
from tests.autograd.strategies import STRATEGIES
from tests.tolerances import assert_close


def layer_norm_composite(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / ag.sqrt(x.var(axis=-1, keepdims=True) + eps) * w + b


def rms_norm_composite(x, w, eps):
    return x / ag.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def forward_and_grads(f, arrays, params):
    leaves = [Tensor(a, requires_grad=True) for a in arrays]
    out = f(*leaves, **params)
    cotangent = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(cotangent)
    return out, [t.grad for t in leaves]


@pytest.mark.parametrize("fused, composite, name", [
    (layer_norm, layer_norm_composite, "layer_norm"),
    (rms_norm, rms_norm_composite, "rms_norm"),
])
@given(data=st.data())
def test_fused_norm_equals_composite(fused, composite, name, data):
    case = data.draw(STRATEGIES[name])
    out, grads = forward_and_grads(lambda *t, eps: fused(*t, eps=eps), case.args, case.params)
    ref, ref_grads = forward_and_grads(lambda *t, eps: composite(*t, eps), case.args,
                                       case.params)
    assert_close(out, ref, kind="float64")
    for g, r in zip(grads, ref_grads):
        assert_close(g, r, kind="float64")


def test_layer_norm_output_is_normalised_and_float32_stays_float32():
    x = np.random.default_rng(1).standard_normal((4, 7, 16)).astype(np.float32) * 5 + 3
    norm = LayerNorm(16)
    y = norm(Tensor(x))
    assert y.dtype == np.float32
    assert_close(y.numpy().mean(-1), np.zeros((4, 7)), kind="float32")
    assert_close(y.numpy().std(-1), np.ones((4, 7)), kind="float32")


def test_rms_norm_module_owns_only_a_weight():
    norm = RMSNorm(8)
    assert [n for n, _ in norm.named_parameters()] == ["weight"]
    y = norm(Tensor(np.ones((2, 8), dtype=np.float32)))
    assert_close(y, np.ones((2, 8)), kind="float32")


def test_parameter_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"layer_norm: a parameter of shape \(3,\) .*\(2, 4\)"):
        layer_norm(np.zeros((2, 4)), np.ones(3), np.zeros(3))
