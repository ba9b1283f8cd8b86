"""Elementwise primitives. Binary ones broadcast; their VJPs sum back with `unbroadcast`.

Every constant in a VJP is a Python float, never a NumPy float64 scalar, so float32 inputs
give float32 gradients.
"""

import math

from autograd.backend import array_module
from autograd.backend import erf as _erf
from autograd.primitive import primitive, unbroadcast


def _shape(v):
    return getattr(v, "shape", ())


def _is_array(v):
    """Python numbers in an expression (x * 0.5) are constants: no gradient is computed."""
    return hasattr(v, "shape")


def _broadcast_error(name, *arrays):
    """NumPy's broadcast error names neither the op nor, always, the shapes: ours does."""
    shapes = " and ".join(str(_shape(a)) for a in arrays)
    return ValueError(f"{name}: shapes {shapes} do not broadcast")


@primitive
def add(x, y):
    try:
        return x + y
    except ValueError:
        raise _broadcast_error("add", x, y) from None


@add.defvjp
def add_vjp(g, out, x, y):
    return (unbroadcast(g, x.shape) if _is_array(x) else None,
            unbroadcast(g, y.shape) if _is_array(y) else None)


@primitive
def sub(x, y):
    try:
        return x - y
    except ValueError:
        raise _broadcast_error("sub", x, y) from None


@sub.defvjp
def sub_vjp(g, out, x, y):
    return (unbroadcast(g, x.shape) if _is_array(x) else None,
            unbroadcast(-g, y.shape) if _is_array(y) else None)


@primitive
def mul(x, y):
    try:
        return x * y
    except ValueError:
        raise _broadcast_error("mul", x, y) from None


@mul.defvjp
def mul_vjp(g, out, x, y):
    return (unbroadcast(g * y, x.shape) if _is_array(x) else None,
            unbroadcast(g * x, y.shape) if _is_array(y) else None)


@primitive
def div(x, y):
    try:
        return x / y
    except ValueError:
        raise _broadcast_error("div", x, y) from None


@div.defvjp
def div_vjp(g, out, x, y):
    # d(x/y)/dx = 1/y ; d(x/y)/dy = -x/y^2 = -out/y
    gx = g / y
    return (unbroadcast(gx, x.shape) if _is_array(x) else None,
            unbroadcast(-gx * out, y.shape) if _is_array(y) else None)


@primitive
def neg(x):
    return -x


@neg.defvjp
def neg_vjp(g, out, x):
    return (-g,)


@primitive
def pow(x, y):
    """x ** y. The gradient with respect to y needs x > 0 (it is taken as 0 elsewhere)."""
    try:
        return x**y
    except ValueError:
        raise _broadcast_error("pow", x, y) from None


@pow.defvjp
def pow_vjp(g, out, x, y):
    # d(x^y)/dx = y x^(y-1), and 0 where y == 0 (x^0 is constant, even at x = 0, where
    # y x^(y-1) would be 0 * inf);  d(x^y)/dy = x^y log x (taken as 0 where x <= 0)
    xp = array_module(out)
    gx = None
    if _is_array(x):
        if _is_array(y):
            dx = y * x ** xp.where(y == 0, 1, y - 1)
        else:
            dx = y * x ** (y - 1) if y != 0 else x * 0
        gx = unbroadcast(g * dx, x.shape)
    if not _is_array(y):
        return gx, None
    if not _is_array(x):  # a Python number raised to a Tensor power
        return gx, g * out * math.log(x) if x > 0 else g * 0
    positive = x > 0
    gy = xp.where(positive, g * out * xp.log(xp.where(positive, x, 1)), 0)
    return gx, unbroadcast(gy, y.shape)


@primitive
def exp(x):
    return array_module(x).exp(x)


@exp.defvjp
def exp_vjp(g, out, x):
    return (g * out,)


@primitive
def log(x):
    return array_module(x).log(x)


@log.defvjp
def log_vjp(g, out, x):
    return (g / x,)


@primitive
def sqrt(x):
    return array_module(x).sqrt(x)


@sqrt.defvjp
def sqrt_vjp(g, out, x):
    return (g * 0.5 / out,)


@primitive
def tanh(x):
    return array_module(x).tanh(x)


@tanh.defvjp
def tanh_vjp(g, out, x):
    return (g * (1 - out * out),)


@primitive
def sigmoid(x):
    # 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) for x < 0: with e = e^-|x| <= 1 neither
    # overflows, and sigmoid(-40) keeps its ~4e-18 instead of cancelling to 0.
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


@sigmoid.defvjp
def sigmoid_vjp(g, out, x):
    return (g * out * (1 - out),)


@primitive
def relu(x):
    return array_module(x).maximum(x, 0)


@relu.defvjp
def relu_vjp(g, out, x):
    return (g * (x > 0),)


@primitive
def erf(x):
    return _erf(x)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@erf.defvjp
def erf_vjp(g, out, x):
    # d erf(x)/dx = 2/sqrt(pi) * exp(-x^2)
    return (g * _TWO_OVER_SQRT_PI * array_module(x).exp(-x * x),)


@primitive
def abs(x):
    return array_module(x).abs(x)


@abs.defvjp
def abs_vjp(g, out, x):
    return (g * array_module(x).sign(x),)  # 0 at x == 0, as in PyTorch


@primitive
def maximum(x, y):
    try:
        return array_module(x, y).maximum(x, y)
    except ValueError:
        raise _broadcast_error("maximum", x, y) from None


@maximum.defvjp
def maximum_vjp(g, out, x, y):
    # Ties split the gradient evenly between the two inputs, as PyTorch does.
    xp = array_module(g)
    gx = xp.where(x > y, g, xp.where(x == y, g * 0.5, 0))
    return (unbroadcast(gx, x.shape) if _is_array(x) else None,
            unbroadcast(g - gx, y.shape) if _is_array(y) else None)


@primitive
def minimum(x, y):
    try:
        return array_module(x, y).minimum(x, y)
    except ValueError:
        raise _broadcast_error("minimum", x, y) from None


@minimum.defvjp
def minimum_vjp(g, out, x, y):
    xp = array_module(g)
    gx = xp.where(x < y, g, xp.where(x == y, g * 0.5, 0))
    return (unbroadcast(gx, x.shape) if _is_array(x) else None,
            unbroadcast(g - gx, y.shape) if _is_array(y) else None)


@primitive
def where(condition, x, y):
    """x where condition is true, else y (condition is a boolean array, not differentiated)."""
    try:
        return array_module(condition, x, y).where(condition, x, y)
    except ValueError:
        raise _broadcast_error("where", condition, x, y) from None


@where.defvjp
def where_vjp(g, out, condition, x, y):
    zero = g.dtype.type(0)
    xp = array_module(g)
    gx = xp.where(condition, g, zero)
    return (None, unbroadcast(gx, x.shape) if _is_array(x) else None,
            unbroadcast(g - gx, y.shape) if _is_array(y) else None)


@primitive
def clip(x, *, lo=None, hi=None):
    """Clamp x into [lo, hi] (either bound may be None)."""
    return array_module(x).clip(x, lo, hi)


@clip.defvjp
def clip_vjp(g, out, x, *, lo=None, hi=None):
    # The gradient passes where x lies inside the closed interval, as in torch.clamp.
    inside = True
    if lo is not None:
        inside = inside & (x >= lo)
    if hi is not None:
        inside = inside & (x <= hi)
    return (g * inside,)


@primitive
def astype(x, *, dtype):
    """Cast to `dtype`: the only way dtypes change in npplm."""
    return x.astype(dtype)


@astype.defvjp
def astype_vjp(g, out, x, *, dtype):
    return (g.astype(x.dtype),)
