"""16-bit floats: stored in 16 bits, computed in float32.

Mixed-precision training (Micikevicius et al., "Mixed Precision Training", ICLR 2018,
arXiv:1710.03740) keeps activations and gradients in a 16-bit format, float16 (5 exponent
bits: range 6e-5 .. 65504) or bfloat16 (8 exponent bits, float32's range, 8 bits of
precision), and does the arithmetic that loses precision in float32: every matrix
product accumulates in float32 (as a GPU's tensor cores do), and every reduction (the sums
of a norm, a softmax, a loss, a bias gradient) adds in float32. In NumPy that is not the
default: a bfloat16 (ml_dtypes) `@` returns float32, `np.dot` on it runs a slow generic loop,
and `np.ones(4096, bfloat16).sum()` is 256, because once the running sum reaches 256 adding
1 no longer changes it in 8 bits of precision.

So the primitives that contract or reduce are wrapped: `in_float32` on a forward widens its
16-bit inputs to float32, runs the plain float32 code, and rounds its float outputs back to
the input's 16-bit dtype; `in_float32_vjp` does the same for a VJP and rounds each gradient
to its input's dtype (the graph checks that dtypes are kept). A forward or VJP whose
inputs are not 16-bit is called as it is: float32 and float64 never pay more than one
dtype test. Elementwise primitives (add, mul, where, the dropout mask) compute in 16 bits,
rounding once per operation, as they do on a GPU.

`HALF` holds float16 and, where `ml_dtypes` is installed, its bfloat16 (whose dtype kind is
"V", not "f": `is_float` is the test the engine uses for "a float dtype").
"""

import functools

import numpy

try:
    import ml_dtypes

    bfloat16 = numpy.dtype(ml_dtypes.bfloat16)
except ImportError:  # the 16-bit path then has float16 only
    bfloat16 = None

HALF = tuple(d for d in (numpy.dtype(numpy.float16), bfloat16) if d is not None)
FLOAT32 = numpy.dtype(numpy.float32)


def is_float(dtype):
    """Whether `dtype` is a floating-point dtype (float16/32/64, and ml_dtypes' bfloat16)."""
    return dtype.kind == "f" or (bfloat16 is not None and dtype == bfloat16)


def is_half(a):
    """Whether `a` is an array of a 16-bit float dtype."""
    return getattr(a, "dtype", None) in HALF


def widen(a):
    """A 16-bit array as float32 (anything else as it is)."""
    return a.astype(FLOAT32) if is_half(a) else a


def _half_of(arrays):
    for a in arrays:
        if is_half(a):
            return a.dtype
    return None


def _narrow(x, dtype):
    if getattr(x, "dtype", None) == FLOAT32:
        return x.astype(dtype)
    return x


def in_float32(fun=None, *, keep_float32=()):
    """Decorate a forward: 16-bit inputs computed in float32, float outputs rounded back to
    the inputs' 16-bit dtype, except the outputs numbered in `keep_float32` (a loss, or a
    statistic saved for the backward, such as attention's log-sum-exp)."""
    if fun is None:
        return lambda f: in_float32(f, keep_float32=keep_float32)

    @functools.wraps(fun)
    def wrapped(*args, **params):
        half = _half_of(args)
        if half is None:
            return fun(*args, **params)
        out = fun(*(widen(a) for a in args), **params)
        if isinstance(out, tuple):
            return tuple(o if i in keep_float32 else _narrow(o, half)
                         for i, o in enumerate(out))
        return out if 0 in keep_float32 else _narrow(out, half)

    return wrapped


def in_float32_vjp(vjp):
    """Decorate a VJP vjp(g, out, *inputs): computed in float32 when anything is 16-bit,
    each gradient then rounded to its own input's dtype."""

    @functools.wraps(vjp)
    def wrapped(g, out, *inputs, **params):
        if _half_of((g, *inputs)) is None and _half_of(out if isinstance(out, tuple)
                                                       else (out,)) is None:
            return vjp(g, out, *inputs, **params)
        widened_out = tuple(widen(o) for o in out) if isinstance(out, tuple) else widen(out)
        widened_g = tuple(widen(x) for x in g) if isinstance(g, tuple) else widen(g)
        grads = vjp(widened_g, widened_out, *(widen(a) for a in inputs), **params)
        return tuple(gi.astype(a.dtype) if gi is not None and is_half(a) else gi
                     for gi, a in zip(grads, inputs))

    return wrapped
