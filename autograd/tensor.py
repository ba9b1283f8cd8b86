"""`Tensor`: an array of the active backend, plus what reverse mode needs to know about it.

A Tensor holds `.data` (a NumPy or CuPy array), `.grad` (filled by `.backward()` on leaves),
and `.requires_grad`. Tensors made by primitives also point at the graph `Node` that made
them. Python operators (`+ - * / ** @`, indexing) call the registered primitives, so
`(x * w).sum().backward()` works as in micrograd, on whole arrays.

Dtypes: Python floats and lists of floats become float32 (the default); arrays keep their
dtype, so float64 works when asked for. A Python scalar in an expression takes the Tensor's
dtype. Integer and boolean Tensors never require gradients.
"""

import numpy

import autograd.backend as backend
from autograd.backend import to_numpy
from autograd.graph import backward as _backward
from autograd.precision import is_float

DEFAULT_DTYPE = numpy.float32


def _scalar(v):
    """NumPy scalars become Python scalars, which never change a Tensor's dtype."""
    return v.item() if isinstance(v, numpy.generic) else v


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "_node", "_index", "__weakref__")
    __array_priority__ = 1000  # numpy_array + tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if backend.array_module(data) is not numpy:
            data = data if dtype is None else data.astype(dtype)  # stays on its GPU
        elif dtype is None and not hasattr(data, "dtype"):
            data = backend.xp.asarray(data)  # Python scalars and lists
            if data.dtype.kind == "f":
                data = data.astype(DEFAULT_DTYPE)
        else:
            data = backend.xp.asarray(data, dtype=dtype)
        if requires_grad and not is_float(data.dtype):
            raise TypeError(
                f"only floating-point Tensors can require gradients, got dtype {data.dtype}"
            )
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._node = None
        self._index = None

    @classmethod
    def _wrap(cls, data, node, index):
        """A primitive's output (no conversion: `data` is already a backend array)."""
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = node is not None
        t._node = node
        t._index = index
        return t

    # --- array facts ------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def numpy(self):
        """The values as a NumPy array (copied to the host on the GPU backend)."""
        return to_numpy(self.data)

    def item(self):
        return self.data.item()

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.numpy()!r}{grad})"

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data, None, None)

    def zero_grad(self):
        self.grad = None

    # --- reverse mode -------------------------------------------------------------------
    def backward(self, grad=None, on_leaf_done=None):
        """Compute d(self)/d(leaf) for every leaf that requires gradients into `leaf.grad`.

        `grad` is d(loss)/d(self); it may be omitted only when self is a scalar (size 1),
        where it is 1. Gradients add up over repeated calls, as in PyTorch: reset them
        with `zero_grad()` between steps. on_leaf_done(leaf) is called once a leaf's
        gradient is complete (see graph.backward).
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a Tensor that does not require gradients: create the inputs "
                "with Tensor(..., requires_grad=True), and do not call it inside no_grad()"
            )
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient argument needs a scalar, but this Tensor "
                    f"has shape {self.shape}: reduce it first (e.g. .sum()) or pass "
                    f"backward(grad) with an array of shape {self.shape}"
                )
            grad = backend.array_module(self.data).ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            grad = backend.array_module(self.data).asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(
                    f"backward(grad): grad has shape {grad.shape}, Tensor has {self.shape}"
                )
        if self._node is None:  # a leaf differentiated with respect to itself
            self.grad = grad.copy() if self.grad is None else self.grad + grad
            if on_leaf_done is not None:
                on_leaf_done(self)
            return
        _backward(self, grad, on_leaf_done)

    # --- operators: each one is a registered primitive ---------------------------------
    def __add__(self, other):
        return elementwise.add(self, _scalar(other))

    def __radd__(self, other):
        return elementwise.add(_scalar(other), self)

    def __sub__(self, other):
        return elementwise.sub(self, _scalar(other))

    def __rsub__(self, other):
        return elementwise.sub(_scalar(other), self)

    def __mul__(self, other):
        return elementwise.mul(self, _scalar(other))

    def __rmul__(self, other):
        return elementwise.mul(_scalar(other), self)

    def __truediv__(self, other):
        return elementwise.div(self, _scalar(other))

    def __rtruediv__(self, other):
        return elementwise.div(_scalar(other), self)

    def __pow__(self, other):
        return elementwise.pow(self, _scalar(other))

    def __rpow__(self, other):
        return elementwise.pow(_scalar(other), self)

    def __neg__(self):
        return elementwise.neg(self)

    def __abs__(self):
        return elementwise.abs(self)

    def __matmul__(self, other):
        return linalg.matmul(self, other)

    def __rmatmul__(self, other):
        return linalg.matmul(other, self)

    def __getitem__(self, index):
        return shape_ops.getitem(self, index=_unwrap_index(index))

    # Comparisons are not differentiable: they return boolean Tensors with no graph.
    def __lt__(self, other):
        return Tensor._wrap(self.data < _raw(other), None, None)

    def __le__(self, other):
        return Tensor._wrap(self.data <= _raw(other), None, None)

    def __gt__(self, other):
        return Tensor._wrap(self.data > _raw(other), None, None)

    def __ge__(self, other):
        return Tensor._wrap(self.data >= _raw(other), None, None)

    def __eq__(self, other):
        return Tensor._wrap(self.data == _raw(other), None, None)

    def __ne__(self, other):
        return Tensor._wrap(self.data != _raw(other), None, None)

    __hash__ = object.__hash__  # Tensors are graph objects: hashed by identity

    # --- methods mirroring NumPy's ---------------------------------------------------------
    def astype(self, dtype):
        return elementwise.astype(self, dtype=numpy.dtype(dtype))

    def exp(self):
        return elementwise.exp(self)

    def log(self):
        return elementwise.log(self)

    def sqrt(self):
        return elementwise.sqrt(self)

    def tanh(self):
        return elementwise.tanh(self)

    def sigmoid(self):
        return elementwise.sigmoid(self)

    def relu(self):
        return elementwise.relu(self)

    def sum(self, axis=None, keepdims=False):
        return reduce.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return reduce.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return reduce.max(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False, ddof=0):
        return reduce.var(self, axis=axis, keepdims=keepdims, ddof=ddof)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return shape_ops.reshape(self, shape=tuple(shape))

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return shape_ops.transpose(self, axes=tuple(axes) if axes else None)

    permute = transpose

    @property
    def T(self):
        return shape_ops.transpose(self, axes=None)

    def swapaxes(self, a, b):
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return shape_ops.transpose(self, axes=tuple(axes))


def as_array(v):
    """The array inside a Tensor, or `v` unchanged (never `v.data` on an ndarray: that is
    NumPy's raw memory buffer)."""
    return v.data if isinstance(v, Tensor) else v


_raw = as_array


def _unwrap_index(index):
    """Replace Tensors inside an index (integer or boolean index arrays) by their arrays."""
    if isinstance(index, tuple):
        return tuple(_raw(i) for i in index)
    return _raw(index)


# The ops modules import Tensor, so they are imported after it is defined.
from autograd.ops import elementwise, linalg, reduce  # noqa: E402
from autograd.ops import shape as shape_ops  # noqa: E402
