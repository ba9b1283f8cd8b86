"""The softmax, log-softmax and cross-entropy kernels (gpu/numba_cpu/softmax.py) equal their
references: the NumPy code of npplm/layers/softmax.py and losses.py, run in float64 on the
same inputs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor
from gpu.numba_cpu import softmax as kernels
from npplm.layers import cross_entropy, log_softmax, losses, softmax
from npplm.layers.softmax import log_softmax_vjp, softmax_vjp
from tests.tolerances import assert_close


def logits(n, c, seed, spread=4.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c)) * spread).astype(np.float32)


def reference(prim, *args, **kwargs):
    """The primitive's NumPy reference: float64 arrays never reach a kernel."""
    wide = [a.astype(np.float64) if getattr(a, "dtype", None) == np.float32 else a
            for a in args]
    return prim(*wide, **kwargs)


shapes = dict(n=st.integers(1, 9), c=st.integers(1, 300), seed=st.integers(0, 2**16))


@given(**shapes)
def test_softmax_and_log_softmax_kernels_equal_the_reference(n, c, seed):
    x = logits(n, c, seed)
    g = logits(n, c, seed + 1, spread=1.0)
    s = kernels.softmax_forward(x)
    ls = kernels.log_softmax_forward(x)
    assert s.dtype == ls.dtype == np.float32
    assert_close(s, reference(softmax.fun, x), kind="float32")
    assert_close(ls, reference(log_softmax.fun, x), kind="float32")
    (ds,) = reference(softmax_vjp, g, s, x)
    (dls,) = reference(log_softmax_vjp, g, ls, x)
    assert_close(kernels.softmax_backward(g, s), ds, kind="float32")
    assert_close(kernels.log_softmax_backward(g, ls), dls, kind="float32")


@given(**shapes, eps=st.sampled_from([0.0, 0.1]), ignored=st.floats(0.0, 0.5))
def test_cross_entropy_kernels_equal_the_reference(n, c, seed, eps, ignored):
    x = logits(n, c, seed)
    rng = np.random.default_rng(seed)
    safe = rng.integers(0, c, n)  # the targets, ignored positions already replaced by 0
    weight = np.where(rng.random(n) < ignored, 0, rng.standard_normal(n)).astype(np.float32)
    loss = kernels.cross_entropy_forward(x, safe, eps)
    assert loss.dtype == np.float32
    assert_close(loss, reference(losses.cross_entropy_reference, x, safe, eps), kind="float32")
    grad = kernels.cross_entropy_backward(x, safe, weight, eps)
    assert grad.dtype == np.float32
    assert_close(grad, reference(losses.cross_entropy_grad_reference, x, safe, weight, eps),
                 kind="float32")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_primitives_use_the_kernel_for_a_language_model_head(reduction, eps):
    # (B, T, V) = (4, 16, 512) float32: large enough to dispatch; loss and logits' gradient
    # through the engine against the float64 reference.
    x = logits(64, 512, 0).reshape(4, 16, 512)
    targets = np.random.default_rng(1).integers(0, 512, (4, 16))
    targets[0, :5] = -100
    assert kernels.applies(-1, x)
    t = Tensor(x, requires_grad=True)
    loss = cross_entropy(t, targets, label_smoothing=eps, reduction=reduction)
    loss.sum().backward() if reduction == "none" else loss.backward()
    t64 = Tensor(x.astype(np.float64), requires_grad=True)
    loss64 = cross_entropy(t64, targets, label_smoothing=eps, reduction=reduction)
    loss64.sum().backward() if reduction == "none" else loss64.backward()
    assert loss.dtype == np.float32 and t.grad.dtype == np.float32
    assert_close(loss, loss64, kind="float32")
    assert_close(t.grad, t64.grad, kind="float32")
    for prim in (softmax, log_softmax):
        assert_close(prim(Tensor(x)), prim(Tensor(x.astype(np.float64))), kind="float32")


def test_dispatch_only_for_large_float32_arrays_on_the_last_axis():
    big = np.zeros((4, kernels.MIN_SIZE // 4), dtype=np.float32)
    assert kernels.applies(-1, big) and kernels.applies(1, big)
    assert not kernels.applies(0, big)  # another axis: the reference
    assert not kernels.applies(-1, big[:, :-1][:1])  # small
    assert not kernels.applies(-1, big.astype(np.float64))  # gradient checks stay exact
    assert not kernels.applies(-1, big, big[:, :10])  # shapes differ


def test_strided_inputs_are_read_correctly():
    x = logits(64, 600, 3)[:, ::2]  # not contiguous
    assert not x.flags.c_contiguous and kernels.applies(-1, x)
    assert_close(softmax(Tensor(x)), reference(softmax.fun, x), kind="float32")


def test_nan_and_inf_stay_nan_as_in_the_reference():
    x = logits(3, 40, 0)
    x[0, 5], x[1, 7] = np.nan, np.inf
    for kernel, prim in ((kernels.softmax_forward, softmax.fun),
                         (kernels.log_softmax_forward, log_softmax.fun)):
        with np.errstate(invalid="ignore"):
            ours, theirs = kernel(x), prim(x.astype(np.float64))
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        assert np.isnan(ours[:2]).any(axis=1).all() and np.isfinite(ours[2]).all()
    loss = kernels.cross_entropy_forward(x, np.zeros(3, dtype=np.int64), 0.0)
    assert np.isnan(loss[:2]).all() and np.isfinite(loss[2])
