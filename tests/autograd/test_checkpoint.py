"""autograd.checkpoint: a function's activations recomputed in backward instead of kept."""

import numpy as np

import autograd as ag
from autograd import Tensor, checkpoint, gradcheck, no_grad
from autograd.graph import toposort


def leaf(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def block(x, w, scale):
    """Several primitives, so that a plain graph keeps several nodes."""
    return ((x @ w).tanh() * scale + x).exp().sum(axis=-1)


def test_the_same_gradients_and_one_node_instead_of_many():
    x, w = leaf(3, 4), leaf(4, 4, seed=1)
    plain = block(x, w, 0.5).sum()
    n_plain = len(toposort(plain._node))
    plain.backward()
    expected = x.grad.copy(), w.grad.copy()
    x.grad = w.grad = None
    kept = checkpoint(lambda a: block(a, w, 0.5), x, params=[w]).sum()
    assert len(toposort(kept._node)) == 2 < n_plain  # the checkpoint node and the sum
    kept.backward()
    assert np.array_equal(x.grad, expected[0]) and np.array_equal(w.grad, expected[1])


def test_gradients_match_finite_differences_for_inputs_and_parameters():
    w = leaf(4, 4, seed=1)
    gradcheck(lambda a: checkpoint(lambda b: block(b, w, 0.5), a, params=[w]).sum(),
              np.random.default_rng(2).standard_normal((3, 4)))
    x = Tensor(np.random.default_rng(3).standard_normal((3, 4)))  # needs no gradient
    gradcheck(lambda v: checkpoint(lambda a, p: block(a, p, 0.5), x, v, params=[]).sum(),
              w.data.copy())


def test_parameters_get_gradients_when_no_input_needs_one():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)))
    w = leaf(4, 4, seed=1)
    block(x, w, 0.5).sum().backward()
    expected, w.grad = w.grad.copy(), None
    checkpoint(lambda a: block(a, w, 0.5), x, params=[w]).sum().backward()
    assert np.array_equal(w.grad, expected)


def test_a_parameter_used_inside_and_outside_is_reported_once_complete():
    x, w = leaf(3, 4), leaf(4, 4, seed=1)
    y = checkpoint(lambda a: block(a, w, 0.5), x, params=[w])
    loss = (y.sum() + (x @ w).sum())  # w also used outside the checkpoint
    seen = {}
    loss.backward(on_leaf_done=lambda t: seen.setdefault(id(t), t.grad.copy()))
    assert np.array_equal(seen[id(w)], w.grad) and np.array_equal(seen[id(x)], x.grad)


def test_multiple_outputs_and_other_arguments_pass_through():
    x, w = leaf(3, 4), leaf(4, 4, seed=1)

    def two(a, scale, name):
        assert name == "block"
        h = a @ w
        return h.tanh() * scale, h.exp()

    def loss(outputs):
        first, second = outputs
        return (first * 2.0).sum() + second.mean()

    loss(two(x, 0.5, "block")).backward()
    expected, x.grad, w.grad = (x.grad.copy(), w.grad.copy()), None, None
    loss(checkpoint(two, x, 0.5, "block", params=[w])).backward()
    assert np.array_equal(x.grad, expected[0]) and np.array_equal(w.grad, expected[1])


def test_random_draws_are_replayed_and_the_generator_ends_where_it_was():
    rng = np.random.default_rng(7)
    state = (lambda: rng.bit_generator.state, lambda s: setattr(rng.bit_generator, "state", s))

    def noisy(a):
        return (a * Tensor(rng.random(a.shape))).sum()

    x = leaf(5)
    checkpoint(noisy, x, random_state=state).backward()
    after = rng.bit_generator.state
    rng2 = np.random.default_rng(7)
    assert np.array_equal(x.grad, rng2.random(5))  # the forward's mask, not a new draw
    assert after == rng.bit_generator.state and after == rng2.bit_generator.state


def test_without_a_graph_it_is_a_plain_call():
    x, w = leaf(3, 4), leaf(4, 4, seed=1)
    with no_grad():
        y = checkpoint(lambda a: block(a, w, 0.5), x, params=[w])
    assert y._node is None
    y = checkpoint(lambda a: ag.exp(a), Tensor(np.ones(3)))
    assert y._node is None
