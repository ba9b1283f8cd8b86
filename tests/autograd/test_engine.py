"""The graph machinery: fan-out, deep graphs, freeing, no_grad, dtypes and error messages."""

import numpy as np
import pytest

import autograd
from autograd import Tensor, graph, no_grad


def leaf(*shape, dtype=np.float64, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype),
                  requires_grad=True)


def test_fan_out_sums_the_gradients_of_every_use():
    x = leaf(3)
    y = x * x + x.exp() + x  # x used four times
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + np.exp(x.data) + 1)


def test_diamond_graph_visits_the_shared_node_once():
    x = leaf(4)
    h = x.tanh()  # consumed twice below: its VJP must run once, with the summed gradient
    calls = []
    vjp = autograd.REGISTRY["tanh"].vjp
    try:
        autograd.REGISTRY["tanh"].vjp = lambda g, out, x: calls.append(1) or vjp(g, out, x)
        (h * 2.0 + h * 3.0).sum().backward()
    finally:
        autograd.REGISTRY["tanh"].vjp = vjp
    assert len(calls) == 1
    np.testing.assert_allclose(x.grad, 5 * (1 - np.tanh(x.data) ** 2))


def test_a_chain_of_100000_ops_does_not_hit_the_recursion_limit():
    x = leaf(1)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_upstream_gradients_are_freed_as_soon_as_used(monkeypatch):
    # Along a chain, at most one pending gradient is alive at a time.
    pending = []
    original = graph._accumulate

    def spy(grads, node, index, g):
        original(grads, node, index, g)
        pending.append(len(grads))

    monkeypatch.setattr(graph, "_accumulate", spy)
    x = leaf(8)
    y = x
    for _ in range(200):
        y = (y * 1.01).tanh()
    y.sum().backward()
    assert len(pending) == 401 and max(pending) == 1


def test_gradients_accumulate_over_backward_calls_until_zeroed():
    x = leaf(2)
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None


def test_leaf_gradients_are_private_copies():
    # add's VJP hands the same array to both inputs; mutating one grad must not touch the other
    a, b = leaf(3, seed=1), leaf(3, seed=2)
    (a + b).sum().backward()
    a.grad *= 0
    np.testing.assert_allclose(b.grad, np.ones(3))


def test_no_grad_records_nothing_and_restores_the_mode():
    x = leaf(3)
    with no_grad():
        y = x * 2.0
        assert not autograd.is_grad_enabled()
    assert autograd.is_grad_enabled()
    assert not y.requires_grad and y._node is None
    with pytest.raises(RuntimeError, match="does not require gradients"):
        y.sum().backward()


def test_only_inputs_that_require_grad_get_gradients():
    x, c = leaf(3), Tensor(np.ones(3))
    (x * c).sum().backward()
    assert c.grad is None and x.grad is not None


def test_detach_cuts_the_graph():
    x = leaf(3)
    y = (x * 2.0).detach() * x
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)


def test_leaf_backward_on_itself():
    x = leaf(1)
    x.backward()
    np.testing.assert_allclose(x.grad, [1.0])


# --- dtypes ------------------------------------------------------------------------------


def test_python_floats_and_lists_default_to_float32():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor([1, 2]).dtype.kind == "i"
    assert Tensor(np.zeros(2)).dtype == np.float64  # arrays keep their dtype


def test_python_scalars_keep_float32():
    x = leaf(3, dtype=np.float32)
    for y in (x + 1.0, 2.0 * x, x / 3.0, 1.0 - x, x**2, 2.0**x, x + np.float64(1.0)):
        assert y.dtype == np.float32


def test_mixing_float32_and_float64_is_an_error_not_a_promotion():
    with pytest.raises(TypeError, match="float32 and float64"):
        leaf(3, dtype=np.float32) + leaf(3, dtype=np.float64)
    with pytest.raises(TypeError, match="mul: .*float32.*float64"):
        leaf(3, dtype=np.float32) * np.ones(3)


def test_integer_tensors_cannot_require_gradients():
    with pytest.raises(TypeError, match="int64"):
        Tensor(np.arange(3), requires_grad=True)


def test_comparisons_give_boolean_tensors_outside_the_graph():
    x = leaf(3)
    mask = x > 0
    assert mask.dtype == np.bool_ and not mask.requires_grad
    y = autograd.where(mask, x, 0.0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, (x.data > 0).astype(np.float64))


# --- error messages ----------------------------------------------------------------------


def test_backward_on_a_non_scalar_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\).*\.sum\(\)"):
        (leaf(2, 3) * 2.0).backward()


def test_backward_with_a_wrong_gradient_shape():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        (leaf(2) * 2.0).backward(np.ones(3))


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum"])
def test_broadcast_errors_name_the_op_and_both_shapes(op):
    with pytest.raises(ValueError, match=rf"{op}: shapes \(2, 3\) and \(4,\)"):
        autograd.REGISTRY[op](leaf(2, 3), leaf(4))


def test_matmul_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: \(2, 3\) @ \(4, 5\)"):
        leaf(2, 3) @ leaf(4, 5)
    with pytest.raises(ValueError, match=r"matmul: batch shapes \(2,\) and \(3,\)"):
        leaf(2, 1, 3) @ leaf(3, 3, 4)


def test_shape_op_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"reshape: .*\(2, 3\) into \(4,\)"):
        leaf(2, 3).reshape(4)
    with pytest.raises(ValueError, match=r"concatenate: shapes \[\(2, 3\), \(2, 4\)\]"):
        autograd.concatenate(leaf(2, 3), leaf(2, 4), axis=0)
    with pytest.raises(ValueError, match=r"stack: .*\(2,\), \(3,\)"):
        autograd.stack(leaf(2), leaf(3))
    with pytest.raises(ValueError, match=r"broadcast_to: .*\(3,\) to \(2,\)"):
        autograd.broadcast_to(leaf(3), shape=(2,))
    with pytest.raises(IndexError, match=r"getitem: .*shape \(3,\)"):
        leaf(3)[5]
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        leaf(3).sum(axis=2)


def test_a_wrong_vjp_is_caught_by_the_engine():
    # A VJP that returns the wrong shape is a bug in the primitive: name it.
    prim = autograd.REGISTRY["exp"]
    vjp = prim.vjp
    try:
        prim.vjp = lambda g, out, x: (g.sum(),)
        with pytest.raises(RuntimeError, match="VJP of exp returned a gradient of shape"):
            leaf(3).exp().sum().backward()
    finally:
        prim.vjp = vjp


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="'add' is already registered"):
        autograd.primitive(lambda x: x, name="add")


def test_full_reductions_and_scalar_gradients_are_arrays_not_numpy_scalars():
    x = Tensor(np.float32(2.0), requires_grad=True)
    y = leaf(3, dtype=np.float32)
    total = (x * y).sum()
    assert isinstance(total.data, np.ndarray) and total.shape == ()
    total.backward()
    assert isinstance(x.grad, np.ndarray) and x.grad.dtype == np.float32


def test_python_number_operands_get_no_gradient_work():
    # x * 0.5: the constant 0.5 gets no gradient, and x's gradient is exact.
    x = leaf(3)
    (x * 0.5 + 1.0 - 2.0 / (x * x + 1.0)).sum().backward()
    np.testing.assert_allclose(x.grad, 0.5 + 4 * x.data / (x.data**2 + 1) ** 2)


def test_on_leaf_done_reports_each_leaf_once_when_its_gradient_is_complete():
    """w is used three times: it is reported once, when the gradients of all three uses
    have arrived (what it holds then is its final gradient); a leaf outside the graph is
    not reported; the gradients are those of a backward without the callback."""
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((3, 3)).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
    x = Tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    unused = Tensor(np.ones(3, np.float32), requires_grad=True)

    def loss():
        h = (x @ w + b).tanh()
        return ((h @ w) * (h @ w)).sum()

    seen = []

    def done(leaf):
        seen.append((leaf, leaf.grad.copy()))

    loss().backward(on_leaf_done=done)
    plain = {id(t): t.grad.copy() for t in (w, b, x)}
    assert sorted(id(t) for t, _ in seen) == sorted(id(t) for t in (w, b, x))
    for t, grad_when_reported in seen:
        np.testing.assert_array_equal(grad_when_reported, plain[id(t)])  # already complete
    for t in (w, b, x):
        t.grad = None
    loss().backward()
    for t in (w, b, x):
        np.testing.assert_array_equal(t.grad, plain[id(t)])
    assert unused.grad is None
