"""Every registered primitive: VJP against finite differences, and dtypes kept.

Parametrised over `REGISTRY` itself, so a new primitive is tested the moment it exists
(and the meta-test below fails until it has a strategy).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npplm  # noqa: F401  (registers the primitives that npplm's layers define)
from autograd import REGISTRY, Tensor, gradcheck, to_numpy
from tests.autograd.strategies import STRATEGIES

NAMES = sorted(REGISTRY)


def test_registry_has_a_strategy_for_every_primitive():
    missing = sorted(set(REGISTRY) - set(STRATEGIES))
    assert not missing, f"primitives without a hypothesis strategy: {missing}"
    stale = sorted(set(STRATEGIES) - set(REGISTRY))
    assert not stale, f"strategies for primitives that do not exist: {stale}"


def test_every_primitive_has_a_vjp():
    assert [name for name, p in REGISTRY.items() if p.vjp is None] == []


def as_single_output(prim, params):
    """A function of Tensors returning one Tensor, whatever the primitive returns."""
    if not prim.multiple_outputs:
        return lambda *ts: prim(*ts, **params)

    def combined(*ts):  # weight each output differently so a swapped gradient shows
        outs = prim(*ts, **params)
        total = outs[0].sum() * 1.0
        for i, o in enumerate(outs[1:], start=2):
            total = total + o.sum() * float(i)
        return total

    return combined


def with_constants_bound(f, args, constants):
    """(f of the other inputs only, those inputs): the case's constants, raw arrays, are
    put back in their places at every call, so gradcheck neither wraps nor perturbs them."""
    if not constants:
        return f, args

    def bound(*ts):
        free = iter(ts)
        return f(*[a if i in constants else next(free) for i, a in enumerate(args)])

    return bound, [a for i, a in enumerate(args) if i not in constants]


@pytest.mark.parametrize("name", NAMES)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_vjp_matches_finite_differences(name, data, xp):
    prim = REGISTRY[name]
    case = data.draw(STRATEGIES[name], label="case")
    args = [xp.asarray(a) if i in case.constants else a for i, a in enumerate(case.args)]
    f, inputs = with_constants_bound(as_single_output(prim, case.params), args, case.constants)
    gradcheck(f, *inputs, xp=xp)


@given(data=st.data())
def test_multiple_output_vjp_with_unused_outputs(data):
    # Only the first piece of a split is used: the others get zero gradients.
    case = data.draw(STRATEGIES["split"])
    gradcheck(lambda x: REGISTRY["split"](x, **case.params)[0], *case.args)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_float32_in_float32_out(name, data):
    prim = REGISTRY[name]
    case = data.draw(STRATEGIES[name], label="case")
    params = dict(case.params)
    if name == "astype":
        params["dtype"] = np.dtype(np.float32)
    args = [a.astype(np.float32) if i in case.constants
            else Tensor(a.astype(np.float32), requires_grad=True) if a.dtype.kind == "f" else a
            for i, a in enumerate(case.args)]
    out = as_single_output(prim, params)(*args)
    assert out.dtype == np.float32, f"{name} returned {out.dtype} for float32 inputs"
    out.backward(np.ones(out.shape, dtype=np.float32))
    for a in args:
        if isinstance(a, Tensor):
            assert a.grad is not None and a.grad.dtype == np.float32, (
                f"{name}: gradient dtype {getattr(a.grad, 'dtype', None)} for a float32 input")
            assert np.all(np.isfinite(to_numpy(a.grad)))


def test_astype_gradient_returns_to_the_input_dtype():
    x = Tensor(np.arange(3.0, dtype=np.float32), requires_grad=True)
    y = x.astype(np.float64)
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, 2 * np.arange(3.0, dtype=np.float32))
