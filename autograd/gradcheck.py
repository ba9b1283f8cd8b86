"""Gradient checking: compare autograd's gradients with central finite differences.

    from autograd import gradcheck
    gradcheck(lambda x, w: (x @ w).tanh(), x, w)   # raises GradcheckError on a mismatch

Everything runs in float64. The output of `f` (any shape) is reduced to a scalar with a
random cotangent w, L = sum(f(x) * w), so one backward pass checks the whole Jacobian
against dL/dx_j ~ (L(x + eps e_j) - L(x - eps e_j)) / (2 eps), one element at a time.
"""

import numpy

import autograd.backend as backend
from autograd.backend import to_numpy
from autograd.graph import no_grad
from autograd.tensor import Tensor


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


def _as_float64(x):
    a = numpy.array(to_numpy(x.data if isinstance(x, Tensor) else x))
    return a.astype(numpy.float64) if a.dtype.kind == "f" else a


def numerical_grad(f, inputs, index, cotangent, eps=1e-6, xp=None):
    """d sum(f(*inputs) * cotangent) / d inputs[index] by central differences.

    `inputs` are NumPy arrays; each evaluation copies them to `xp` (default: the backend).
    """
    xp = xp or backend.xp
    inputs = list(inputs)
    x = inputs[index]
    grad = numpy.zeros_like(x)
    flat, flat_grad = x.reshape(-1), grad.reshape(-1)  # views into x and grad
    with no_grad():
        for j in range(flat.size):
            saved = flat[j]
            flat[j] = saved + eps
            plus = (to_numpy(f(*[Tensor(xp.asarray(a)) for a in inputs]).data) * cotangent).sum()
            flat[j] = saved - eps
            minus = (to_numpy(f(*[Tensor(xp.asarray(a)) for a in inputs]).data) * cotangent).sum()
            flat[j] = saved
            flat_grad[j] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(f, *inputs, eps=1e-6, atol=1e-6, rtol=1e-5, seed=0, xp=None):
    """Check the gradients of `f` with respect to every floating-point input.

    f:      a function of Tensors returning a Tensor.
    inputs: arrays or Tensors; floating ones are checked (cast to float64), integer ones
            (indices, targets) are passed through unchanged.
    xp:     the array module to run on (default: the active backend).
    Returns True, or raises GradcheckError naming the input, the worst element and both
    values.
    """
    xp = xp or backend.xp
    xs = [_as_float64(x) for x in inputs]
    tensors = [Tensor(xp.asarray(a), requires_grad=a.dtype.kind == "f") for a in xs]
    out = f(*tensors)
    if out.dtype != numpy.float64:
        raise GradcheckError(f"f returned dtype {out.dtype} for float64 inputs")
    cotangent = numpy.random.default_rng(seed).standard_normal(out.shape)
    if out.requires_grad:
        out.backward(xp.asarray(cotangent))
    for i, (x, t) in enumerate(zip(xs, tensors)):
        if x.dtype.kind != "f":
            continue
        analytic = numpy.zeros_like(x) if t.grad is None else to_numpy(t.grad)
        numeric = numerical_grad(f, xs, i, cotangent, eps, xp)
        if not numpy.allclose(analytic, numeric, atol=atol, rtol=rtol):
            err = numpy.abs(analytic - numeric) - rtol * numpy.abs(numeric)
            j = numpy.unravel_index(numpy.argmax(err), x.shape)
            raise GradcheckError(
                f"gradient of input {i} (shape {x.shape}) differs at {tuple(map(int, j))}: "
                f"autograd {analytic[j]:.10g}, finite differences {numeric[j]:.10g} "
                f"(max abs difference {numpy.abs(analytic - numeric).max():.3g})"
            )
    return True
