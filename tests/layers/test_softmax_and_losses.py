"""Fused primitives against their composite versions, at hard inputs, and their errors.

softmax, log_softmax and cross_entropy are single primitives with hand-derived VJPs; each is
compared (forward and VJP, float64) with the same function built from smaller primitives,
whose gradients the engine derives on its own. Then: very large logits, float32, the
cross-entropy error messages, and the statistics and contract of dropout.
"""

import math
import re

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd as ag
from autograd import REGISTRY, Tensor
from npplm import layers
from npplm.layers.dropout import dropout_with_mask
from tests.autograd.strategies import array
from tests.tolerances import assert_close

# --- the composite versions, from smaller primitives --------------------------------------


def softmax_composite(x, axis=-1):
    e = ag.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_composite(x, axis=-1):
    return x - ag.logsumexp(x, axis=axis, keepdims=True)


def cross_entropy_composite(logits, targets, ignore_index=-100, label_smoothing=0.0,
                            reduction="mean"):
    n_classes = logits.shape[-1]
    logp = layers.log_softmax(logits).reshape(-1, n_classes)  # (..., C) -> (N, C)
    flat = targets.reshape(-1)  # (N,)
    valid = flat != ignore_index
    picked = logp[np.arange(flat.size), np.where(valid, flat, 0)]  # (N,): logp[i, t_i]
    loss = (1.0 - label_smoothing) * -picked - label_smoothing * logp.mean(axis=-1)
    loss = ag.where(valid, loss, 0.0)
    if reduction == "none":
        return loss.reshape(targets.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / float(valid.sum())


def value_and_grad(f, x, cotangent, **kwargs):
    """f(x) and the gradient of sum(f(x) * cotangent) with respect to x."""
    leaf = Tensor(np.array(x), requires_grad=True)
    out = f(leaf, **kwargs)
    out.backward(np.asarray(cotangent, dtype=out.dtype).reshape(out.shape))
    return out, leaf.grad


def assert_same_function(fused, composite, x, cotangent, kind, **kwargs):
    out, grad = value_and_grad(fused, x, cotangent, **kwargs)
    expected, expected_grad = value_and_grad(composite, x, cotangent, **kwargs)
    note("forward")
    assert_close(out, expected, kind=kind)
    note("gradient")
    assert_close(grad, expected_grad, kind=kind)
    return out, grad


def cotangent_for(data, shape):
    seed = data.draw(st.integers(0, 2**32 - 1), label="cotangent seed")
    return np.random.default_rng(seed).standard_normal(shape)


@st.composite
def logits_and_axis(draw, lo=-30.0, hi=30.0):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return array(draw, shape, lo, hi), axis


@st.composite
def cross_entropy_inputs(draw, lo=-30.0, hi=30.0, at_least_one_counted=True):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    n_classes = draw(st.integers(2, 5))
    logits = array(draw, batch + (n_classes,), lo, hi)
    ignore_index = draw(st.sampled_from([-100, 0]))
    targets = draw(hnp.arrays(np.int64, batch, elements=st.integers(0, n_classes - 1)))
    targets = np.where(draw(hnp.arrays(np.bool_, batch)), ignore_index, targets)
    if at_least_one_counted:
        targets.flat[0] = 1  # a class, and never ignore_index: the mean is defined
    params = dict(ignore_index=ignore_index,
                  label_smoothing=draw(st.sampled_from([0.0, 0.1])),
                  reduction=draw(st.sampled_from(["mean", "sum", "none"])))
    return logits, targets, params


# --- fused equals composite ---------------------------------------------------------------


@given(case=logits_and_axis(), data=st.data())
def test_softmax_equals_exp_over_sum(case, data):
    x, axis = case
    assert_same_function(layers.softmax, softmax_composite, x, cotangent_for(data, x.shape),
                         "exact64", axis=axis)


@given(case=logits_and_axis(), data=st.data())
def test_log_softmax_equals_x_minus_logsumexp(case, data):
    x, axis = case
    assert_same_function(layers.log_softmax, log_softmax_composite, x,
                         cotangent_for(data, x.shape), "exact64", axis=axis)


@given(case=cross_entropy_inputs(), data=st.data())
def test_cross_entropy_equals_its_composite(case, data):
    logits, targets, params = case
    shape = targets.shape if params["reduction"] == "none" else ()
    out, grad = assert_same_function(
        lambda x, **kw: layers.cross_entropy(x, targets, **kw),
        lambda x, **kw: cross_entropy_composite(x, targets, **kw),
        logits, cotangent_for(data, shape), "exact64", **params)
    ignored = targets == params["ignore_index"]
    assert np.all(grad[ignored] == 0), "ignored positions must get no gradient"


# --- numerically hard inputs --------------------------------------------------------------


@given(case=cross_entropy_inputs(lo=-3.0, hi=3.0), data=st.data())
def test_large_logits_give_finite_values_and_gradients(case, data):
    # exp(1000) overflows float64, so the fused ops must subtract the maximum first. Adding
    # a constant to every logit of a row changes none of them, so compare with the small
    # logits; spreading the row (x 300) must still give finite results.
    logits, targets, params = case
    g = cotangent_for(data, logits.shape)
    for fused in (layers.softmax, layers.log_softmax):
        shifted, shifted_grad = value_and_grad(fused, logits + 1000.0, g)
        out, grad = value_and_grad(fused, logits, g)
        assert_close(shifted, out, kind="float64")
        assert_close(shifted_grad, grad, kind="float64")
        spread, spread_grad = value_and_grad(fused, logits * 300.0, g)
        assert np.all(np.isfinite(spread.data)) and np.all(np.isfinite(spread_grad))
    g = cotangent_for(data, targets.shape if params["reduction"] == "none" else ())
    ce = lambda x, **kw: layers.cross_entropy(x, targets, **kw)  # noqa: E731
    shifted, shifted_grad = value_and_grad(ce, logits + 1000.0, g, **params)
    out, grad = value_and_grad(ce, logits, g, **params)
    assert_close(shifted, out, kind="float64")
    assert_close(shifted_grad, grad, kind="float64")
    spread, spread_grad = value_and_grad(ce, logits * 300.0, g, **params)
    assert np.all(np.isfinite(spread.data)) and np.all(np.isfinite(spread_grad))


@given(case=cross_entropy_inputs(), data=st.data())
def test_banned_classes_at_minus_infinity_drop_out_of_cross_entropy(case, data):
    # Constrained vocabularies set banned logits to -inf: the loss must equal the loss over
    # the allowed classes alone, with zero (not nan) gradient on the banned ones.
    logits, targets, params = case
    if params["ignore_index"] == 0:  # here ignored positions are marked -100
        targets = np.where(targets == 0, -100, targets)
    # no label smoothing: it puts mass on every class, and a banned one would cost inf
    params = dict(params, ignore_index=-100, label_smoothing=0.0)
    n_classes = logits.shape[-1]
    used = set(targets[targets >= 0].ravel().tolist())
    banned = [c for c in range(n_classes)
              if c not in used and data.draw(st.booleans(), label=f"ban {c}")]
    allowed = [c for c in range(n_classes) if c not in banned]
    renumber = np.full(n_classes, -100)
    renumber[allowed] = np.arange(len(allowed))
    kept_targets = np.where(targets >= 0, renumber[np.maximum(targets, 0)], -100)
    masked = logits.copy()
    masked[..., banned] = -np.inf
    g = cotangent_for(data, targets.shape if params["reduction"] == "none" else ())
    out, grad = value_and_grad(lambda x: layers.cross_entropy(x, targets, **params), masked, g)
    expected, expected_grad = value_and_grad(
        lambda x: layers.cross_entropy(x, kept_targets, **params), logits[..., allowed], g)
    assert_close(out, expected, kind="exact64")
    assert_close(grad[..., allowed], expected_grad, kind="exact64")
    np.testing.assert_array_equal(grad[..., banned], 0.0)


def test_log_softmax_of_far_apart_logits():
    # exp(-1000) underflows to 0 next to exp(0): log_softmax must not take log(0).
    x = np.array([1000.0, 0.0, -1000.0])
    out, grad = value_and_grad(layers.log_softmax, x, np.ones(3))
    assert_close(out, x - x.max(), kind="exact64")  # log(1 + e^-1000 + e^-2000) = 0 here
    assert_close(grad, np.ones(3) - 3 * np.eye(3)[0], kind="exact64")  # g - softmax*sum(g)
    loss = layers.cross_entropy(Tensor(x[None]), np.array([2]))
    assert_close(loss, np.array(2000.0), kind="exact64")


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "cross_entropy"])
@given(case=cross_entropy_inputs(lo=-3.0, hi=3.0))
def test_float32_inputs_stay_float32(name, case):
    logits, targets, params = case
    if name == "cross_entropy":
        def f(x):
            return layers.cross_entropy(x, targets, **params)
    else:
        f = REGISTRY[name]
    g = np.random.default_rng(0).standard_normal(f(Tensor(logits)).shape)
    out32, grad32 = value_and_grad(f, logits.astype(np.float32), g)
    out64, grad64 = value_and_grad(f, logits, g)
    assert out32.dtype == np.float32 and grad32.dtype == np.float32
    assert_close(out32, out64.data.astype(np.float32), kind="float32")
    assert_close(grad32, grad64.astype(np.float32), kind="grad")


# --- cross-entropy errors -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [5, 7, -1, -101])
def test_out_of_range_targets_name_the_value_and_the_class_count(bad):
    logits = Tensor(np.zeros((2, 3, 5)), requires_grad=True)
    targets = np.array([[0, 1, 2], [3, bad, -100]])
    with pytest.raises(IndexError, match=rf"target {bad} is out of range for 5 classes"):
        layers.cross_entropy(logits, targets)


@pytest.mark.parametrize("targets_shape", [(6,), (2, 3, 1), (3, 2)])
def test_wrong_target_shape_names_both_shapes(targets_shape):
    logits = Tensor(np.zeros((2, 3, 5)))
    targets = np.zeros(targets_shape, dtype=np.int64)
    with pytest.raises(ValueError, match=re.escape(str(targets_shape)) + r".*\(2, 3, 5\)"):
        layers.cross_entropy(logits, targets)


def test_float_targets_and_unknown_reductions_are_refused():
    logits = Tensor(np.zeros((2, 5)))
    with pytest.raises(TypeError, match="integer"):
        layers.cross_entropy(logits, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="'avg'"):
        layers.cross_entropy(logits, np.array([1, 2]), reduction="avg")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_all_ignored_mean_is_nan_like_torch(label_smoothing):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    targets = np.full((2, 3), -100)
    logits = Tensor(x.copy(), requires_grad=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0, on purpose
        loss = layers.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        loss.backward()
    t_logits = torch.tensor(x, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(
        t_logits.reshape(-1, 4), torch.from_numpy(targets).reshape(-1),
        label_smoothing=label_smoothing)
    t_loss.backward()
    assert np.isnan(loss.item()) and torch.isnan(t_loss).item()
    assert_close(logits.grad, t_logits.grad.numpy(), kind="float64")  # zeros in both
    for reduction in ("sum", "none"):  # nothing to average: plain zeros
        out = layers.cross_entropy(Tensor(x), targets, reduction=reduction)
        np.testing.assert_array_equal(out.data, np.zeros(out.shape))


# --- dropout --------------------------------------------------------------------------------


def test_the_registered_dropout_primitive_is_the_masked_one():
    assert REGISTRY["dropout"] is dropout_with_mask
    assert layers.dropout not in REGISTRY.values()  # the public function draws the mask


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_dropout_zero_fraction_is_within_binomial_bounds(p, seed):
    n = 100_000
    out = layers.dropout(Tensor(np.ones(n)), p, np.random.default_rng(seed))
    zeros = int((out.data == 0).sum())
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(zeros - n * p) < 5 * sigma, f"{zeros} zeros of {n} at p={p}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_survivors_are_scaled_and_gradients_follow_the_mask(p, dtype):
    rng = np.random.default_rng(1)
    x = Tensor((rng.standard_normal(1000) + 5.0).astype(dtype), requires_grad=True)  # no 0
    out = layers.dropout(x, p, np.random.default_rng(2))
    keep = out.data != 0
    assert out.dtype == dtype
    assert 0 < keep.sum() < keep.size
    kind = "exact64" if dtype == np.float64 else "float32"
    assert_close(out.data[keep], x.data[keep] / (1 - p), kind=kind)
    g = rng.standard_normal(1000).astype(dtype)
    out.backward(g)
    assert x.grad.dtype == dtype
    assert_close(x.grad, np.where(keep, g / (1 - p), 0), kind=kind)
    # the public function is the registered primitive with the mask it drew
    assert out._node.primitive is REGISTRY["dropout"]
    np.testing.assert_array_equal(out._node.inputs[1], keep)


def test_dropout_same_seed_same_mask():
    x = Tensor(np.ones((100, 100)))
    first = layers.dropout(x, 0.5, np.random.default_rng(3)).data
    again = layers.dropout(x, 0.5, np.random.default_rng(3)).data
    other = layers.dropout(x, 0.5, np.random.default_rng(4)).data
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)


@pytest.mark.parametrize("p, training", [(0.5, False), (0.0, True), (0.0, False)])
def test_dropout_off_returns_x_unchanged(p, training):
    x = Tensor(np.random.default_rng(0).standard_normal(50), requires_grad=True)
    out = layers.dropout(x, p, np.random.default_rng(0), training=training)
    np.testing.assert_array_equal(out.data, x.data)
    g = np.arange(50.0)
    out.backward(g)
    np.testing.assert_array_equal(x.grad, g)


def test_dropout_needs_a_generator():
    with pytest.raises(ValueError, match="random generator"):
        layers.dropout(Tensor(np.ones(3)), 0.1, None)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_p_outside_zero_one_is_refused(p):
    with pytest.raises(ValueError, match=rf"p={p}"):
        layers.dropout(Tensor(np.ones(3)), p, np.random.default_rng(0))


def test_dropout_accepts_a_plain_array():
    out = layers.dropout(np.ones(1000), 0.5, np.random.default_rng(0))
    assert set(np.unique(out.data)) <= {0.0, 2.0}
