"""Shape primitives: they move values around, so their VJPs move gradients back."""

import numpy

from autograd.backend import array_module, scatter_add
from autograd.precision import in_float32_vjp
from autograd.primitive import primitive, unbroadcast


@primitive
def reshape(x, *, shape):
    try:
        return x.reshape(shape)
    except ValueError:
        raise ValueError(
            f"reshape: cannot reshape an array of shape {x.shape} into {shape}"
        ) from None


@reshape.defvjp
def reshape_vjp(g, out, x, *, shape):
    return (g.reshape(x.shape),)


@primitive
def transpose(x, *, axes=None):
    """Permute axes (reverse them when axes is None); PyTorch calls this permute."""
    return array_module(x).transpose(x, axes)


@transpose.defvjp
def transpose_vjp(g, out, x, *, axes=None):
    xp = array_module(g)
    if axes is None:
        return (xp.transpose(g),)
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a % len(axes)] = i
    return (xp.transpose(g, inverse),)


@primitive
def broadcast_to(x, *, shape):
    try:
        return array_module(x).broadcast_to(x, shape)
    except ValueError:
        raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}") from None


@broadcast_to.defvjp
def broadcast_to_vjp(g, out, x, *, shape):
    return (unbroadcast(g, x.shape),)


@primitive
def expand_dims(x, *, axis):
    return array_module(x).expand_dims(x, axis)


@expand_dims.defvjp
def expand_dims_vjp(g, out, x, *, axis):
    return (g.reshape(x.shape),)


@primitive
def squeeze(x, *, axis=None):
    return array_module(x).squeeze(x, axis)


@squeeze.defvjp
def squeeze_vjp(g, out, x, *, axis=None):
    return (g.reshape(x.shape),)


def _has_integer_array(index):
    """True if the index holds an integer array, the only way to pick an element twice."""
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, list) or (getattr(i, "dtype", None) is not None
                                       and i.dtype.kind in "iu" and i.ndim > 0)
               for i in items)


@primitive
def getitem(x, *, index):
    """x[index]: slices, integer arrays and boolean masks, as NumPy indexes."""
    try:
        return x[index]
    except IndexError as e:
        raise IndexError(f"getitem: {e} (array shape {x.shape})") from None


@getitem.defvjp
@in_float32_vjp  # repeated indices (an embedding table's rows) add in float32
def getitem_vjp(g, out, x, *, index):
    xp = array_module(g)
    # zeros, not zeros_like: NumPy's zeros gets pre-zeroed pages from the OS and touches
    # only the rows written, which matters for an embedding table's gradient (V x C).
    gx = xp.zeros(x.shape, dtype=x.dtype)
    if _has_integer_array(index):
        scatter_add(gx, index, g)  # repeated integer indices accumulate their gradients
    else:
        gx[index] = g  # slices and boolean masks select each element at most once
    return (gx,)


@primitive
def concatenate(*xs, axis=0):
    if not xs:
        raise ValueError("concatenate: needs at least one array")
    try:
        return array_module(*xs).concatenate(xs, axis=axis)
    except ValueError:
        raise ValueError(
            f"concatenate: shapes {[x.shape for x in xs]} do not match outside axis {axis}"
        ) from None


@concatenate.defvjp
def concatenate_vjp(g, out, *xs, axis=0):
    xp = array_module(g)
    ends = []
    total = 0
    for x in xs[:-1]:
        total += x.shape[axis]
        ends.append(total)
    return tuple(xp.split(g, ends, axis=axis))


@primitive
def stack(*xs, axis=0):
    if not xs:
        raise ValueError("stack: needs at least one array")
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"stack: all shapes must be equal, got {[x.shape for x in xs]}")
    return array_module(*xs).stack(xs, axis=axis)


@stack.defvjp
def stack_vjp(g, out, *xs, axis=0):
    xp = array_module(g)
    return tuple(xp.take(g, i, axis=axis) for i in range(len(xs)))


@primitive(multiple_outputs=True)
def split(x, *, sections, axis=0):
    """Split along `axis`: `sections` is a number of equal parts or a list of cut points."""
    try:
        return tuple(array_module(x).split(x, sections, axis=axis))
    except ValueError:
        raise ValueError(
            f"split: an axis of size {x.shape[axis]} does not divide into {sections} parts"
        ) from None


@split.defvjp
def split_vjp(g, out, x, *, sections, axis=0):
    return (array_module(x).concatenate(g, axis=axis),)


@primitive
def pad(x, *, pad_width, value=0.0):
    """Pad with a constant; `pad_width` is ((before, after), ...) per axis, as in NumPy."""
    return array_module(x).pad(x, pad_width, mode="constant", constant_values=value)


@pad.defvjp
def pad_vjp(g, out, x, *, pad_width, value=0.0):
    widths = numpy.broadcast_to(numpy.asarray(pad_width), (x.ndim, 2)).tolist()
    index = tuple(slice(b, b + n) for (b, _), n in zip(widths, x.shape))
    return (g[index],)
