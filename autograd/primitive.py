"""Primitives: the registry of differentiable ops, each a forward with its VJP beside it.

A primitive is a plain function on raw arrays (NumPy or CuPy). The `@primitive` decorator
turns it into a graph node maker and adds it to `REGISTRY`; its gradient rule is attached on
the lines directly below with `@name.defvjp`:

    @primitive
    def mul(x, y):
        return x * y

    @mul.defvjp
    def mul_vjp(g, out, x, y):          # g = dLoss/d(out)
        return unbroadcast(g * y, x.shape), unbroadcast(g * x, y.shape)

One VJP signature everywhere: `vjp(g, out, *inputs, **params) -> tuple`, one entry per
positional input (None where the input is not differentiable, such as an index array).
Positional arguments are the inputs (Tensors, arrays or Python scalars); keyword arguments
are static parameters (axis, shape, ...). A primitive with `multiple_outputs=True` returns a
tuple of arrays, and its VJP receives a tuple of gradients (zeros for unused outputs).
"""

import numpy

from autograd.graph import Node, is_grad_enabled
from autograd.precision import is_float, is_half
from autograd.tensor import Tensor

REGISTRY = {}  # name -> Primitive, in definition order: tests and benchmarks enumerate it


class Primitive:
    """A registered differentiable op. Call it with Tensors, arrays or scalars."""

    def __init__(self, fun, name, multiple_outputs=False):
        if name in REGISTRY:
            raise ValueError(f"primitive {name!r} is already registered")
        self.fun = fun
        self.name = name
        self.multiple_outputs = multiple_outputs
        self.vjp = None
        self.__doc__ = fun.__doc__
        REGISTRY[name] = self

    def defvjp(self, vjp):
        """Attach the gradient rule `vjp(g, out, *inputs, **params) -> tuple`."""
        self.vjp = vjp
        return vjp

    def __repr__(self):
        return f"<primitive {self.name}>"

    def __call__(self, *args, **params):
        raw = []
        needs_grad = False
        float_dtype = None
        for a in args:
            if isinstance(a, Tensor):
                needs_grad = needs_grad or a.requires_grad
                a = a.data
            dtype = getattr(a, "dtype", None)
            if dtype is not None and is_float(dtype):
                if float_dtype is None:
                    float_dtype = dtype
                elif dtype != float_dtype:
                    raise TypeError(
                        f"{self.name}: inputs have different float dtypes {float_dtype} and "
                        f"{dtype}; npplm never promotes silently, cast one with .astype()"
                    )
            raw.append(a)
        out = self.fun(*raw, **params)
        if isinstance(out, numpy.generic):  # NumPy reductions return scalars: keep arrays
            out = numpy.asarray(out)
        node = None
        first = out[0] if self.multiple_outputs else out
        if needs_grad and is_grad_enabled() and is_float(first.dtype):  # ints: no gradient
            parents = tuple(a if isinstance(a, Tensor) and a.requires_grad else None
                            for a in args)
            node = Node(self, parents, tuple(raw), params, out)
        if self.multiple_outputs:
            return tuple(Tensor._wrap(o, node, i) for i, o in enumerate(out))
        return Tensor._wrap(out, node, None)


def primitive(fun=None, *, name=None, multiple_outputs=False):
    """Decorator: register `fun` (raw arrays in, raw array out) as a primitive."""
    if fun is None:
        return lambda f: primitive(f, name=name, multiple_outputs=multiple_outputs)
    return Primitive(fun, name or fun.__name__, multiple_outputs)


def unbroadcast(g, shape):
    """Sum a gradient `g` down to `shape`, undoing NumPy broadcasting.

    Broadcasting prepends axes and stretches size-1 axes; the adjoint of copying a value to
    many places is summing those places' gradients back into it.
    """
    if g.shape == shape:
        return g
    if is_half(g):  # the sums in float32 (autograd/precision.py)
        return unbroadcast(g.astype("float32"), shape).astype(g.dtype)
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    # Now g.shape == shape. A sum over every axis gives a NumPy scalar: make it an array.
    return numpy.asarray(g) if isinstance(g, numpy.generic) else g
