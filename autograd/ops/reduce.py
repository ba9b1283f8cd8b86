"""Reductions over `axis` (None, an int, or a tuple of ints), with `keepdims`.

Sums of 16-bit arrays add in float32 (`in_float32`, autograd/precision.py). Each VJP
first puts the reduced axes back as size-1 axes (`_keep`), after which NumPy
broadcasting spreads the gradient over the elements that were reduced.
"""

from autograd.backend import array_module
from autograd.precision import in_float32, in_float32_vjp
from autograd.primitive import primitive


def _axes(axis, ndim):
    """Normalise `axis` to a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    out = []
    for a in axis:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim)
    return tuple(sorted(out))


def _keep(g, ndim, axis, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input again."""
    if keepdims:
        return g
    shape = list(g.shape)
    for a in _axes(axis, ndim):
        shape.insert(a, 1)
    return g.reshape(shape)


def _count(shape, axis):
    n = 1
    for a in _axes(axis, len(shape)):
        n *= shape[a]
    return n


@primitive
@in_float32
def sum(x, *, axis=None, keepdims=False):
    _axes(axis, x.ndim)
    return x.sum(axis=axis, keepdims=keepdims)


@sum.defvjp
@in_float32_vjp
def sum_vjp(g, out, x, *, axis=None, keepdims=False):
    xp = array_module(g)
    return (xp.broadcast_to(_keep(g, x.ndim, axis, keepdims), x.shape),)


@primitive
@in_float32
def mean(x, *, axis=None, keepdims=False):
    _axes(axis, x.ndim)
    return x.mean(axis=axis, keepdims=keepdims)


@mean.defvjp
@in_float32_vjp
def mean_vjp(g, out, x, *, axis=None, keepdims=False):
    xp = array_module(g)
    g = _keep(g, x.ndim, axis, keepdims) / _count(x.shape, axis)
    return (xp.broadcast_to(g, x.shape),)


@primitive
def max(x, *, axis=None, keepdims=False):
    _axes(axis, x.ndim)
    return x.max(axis=axis, keepdims=keepdims)


@max.defvjp
def max_vjp(g, out, x, *, axis=None, keepdims=False):
    # The gradient goes to the maximal elements, split evenly among ties (torch.amax).
    at_max = x == _keep(out, x.ndim, axis, keepdims)
    ties = at_max.sum(axis=axis, keepdims=True)
    return (_keep(g, x.ndim, axis, keepdims) * at_max / ties.astype(g.dtype),)


@primitive
@in_float32
def var(x, *, axis=None, keepdims=False, ddof=0):
    """Variance: mean((x - mean(x))^2) with N - ddof in the denominator."""
    _axes(axis, x.ndim)
    return x.var(axis=axis, keepdims=keepdims, ddof=ddof)


@var.defvjp
@in_float32_vjp
def var_vjp(g, out, x, *, axis=None, keepdims=False, ddof=0):
    # d var / d x_i = 2 (x_i - mean) / (N - ddof)
    centered = x - x.mean(axis=axis, keepdims=True)
    scale = 2.0 / (_count(x.shape, axis) - ddof)
    return (_keep(g, x.ndim, axis, keepdims) * centered * scale,)


@primitive
@in_float32
def logsumexp(x, *, axis=None, keepdims=False):
    """log(sum(exp(x))), computed stably by factoring out the maximum."""
    xp = array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)  # all -inf rows stay -inf instead of becoming nan
    out = xp.log(xp.exp(x - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else _squeeze(out, x.ndim, axis)


def _squeeze(out, ndim, axis):
    return out.reshape([n for i, n in enumerate(out.shape) if i not in _axes(axis, ndim)])


@logsumexp.defvjp
@in_float32_vjp
def logsumexp_vjp(g, out, x, *, axis=None, keepdims=False):
    # d lse / d x_i = exp(x_i - lse) = softmax(x)_i
    xp = array_module(g)
    return (_keep(g, x.ndim, axis, keepdims) * xp.exp(x - _keep(out, x.ndim, axis, keepdims)),)
