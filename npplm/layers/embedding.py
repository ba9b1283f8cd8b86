"""Embedding: row lookup in a (V, C) table, with the ids checked against V."""

import numpy as np

from autograd import Tensor, array_module, as_array, primitive, to_numpy, where
from autograd.backend import scatter_add
from autograd.precision import in_float32_vjp
from gpu.numba_cpu import embedding as kernels
from npplm.layers.module import Module, initial_weight


def int_array(x, name):
    """An integer NumPy/CuPy array from an array, a Tensor or a list; TypeError otherwise.

    Every model's forward starts with it, so that float ids fail with the argument's name.
    """
    x = as_array(x)
    x = x if hasattr(x, "dtype") else np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
    return x


def check_ids(ids, limit, what="token id"):
    """Raise IndexError naming the first id outside [0, limit)."""
    ids = to_numpy(as_array(ids))
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{what}s must be integers, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= limit)
    if bad.any():
        raise IndexError(f"{what} {int(ids[bad][0])} is out of range for a table of {limit} "
                         f"rows (valid: 0..{limit - 1})")


def embedding_grad_reference(g, ids, table_shape, dtype):
    """grad (V, C): each row of g (..., C) added into the table row its id read, (V, C)."""
    grad = array_module(g).zeros(table_shape, dtype=dtype)
    scatter_add(grad, ids, g)  # repeated ids accumulate (np.add.at: unbuffered, in order)
    return grad


@primitive
def embedding(table, ids):
    """table[ids]: (V, C) and integer ids (...) -> (..., C), one fused primitive so that its
    gradient can be scattered on every core (gpu/numba_cpu/embedding.py)."""
    return table[ids]


@embedding.defvjp
@in_float32_vjp  # repeated ids add up in float32 under 16-bit training
def embedding_vjp(g, out, table, ids):
    if kernels.applies(g, table.shape, table.dtype):
        return kernels.embedding_backward(g, ids, table.shape), None  # Numba, float32 NumPy
    return embedding_grad_reference(g, ids, table.shape, table.dtype), None


class Embedding(Module):
    """Owns weight (V, C) ~ N(0, std^2); forward(ids) = weight[ids], (...) -> (..., C).

    The gradient of the lookup scatters back into the rows used, adding up over repeated
    ids (`embedding`, a primitive of its own for its parallel kernel).

    padding_idx, as torch's nn.Embedding(V, C, padding_idx=pad): that row starts at zero
    and a lookup sends it no gradient, so training never moves it. BERT, RoBERTa, ALBERT
    and some LLaMA configs build their tables so; the reference gradients need it.
    """

    def __init__(self, num_embeddings, dim, std=0.02, rng=None, dtype=np.float32,
                 what="token id", padding_idx=None):
        rng = np.random.default_rng(0) if rng is None else rng
        w = initial_weight(rng, (num_embeddings, dim), std, dtype)
        self.weight = Tensor(w, requires_grad=True)
        self.what = what  # named in the out-of-range error: "token id", "position", ...
        self.padding_idx = padding_idx
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, ids):
        """ids (...) on any device, checked against V, then moved to the table's device."""
        ids = as_array(ids)
        check_ids(ids, self.weight.shape[0], self.what)
        ids = array_module(self.weight.data).asarray(ids)  # host ids -> the table's device
        rows = embedding(self.weight, ids)  # (...) -> (..., C)
        if self.padding_idx is None:
            return rows
        is_pad = (ids == self.padding_idx)[..., None]  # (..., 1)
        if not is_pad.any():
            return rows
        # The same values, but padding positions read the row as a constant: no gradient.
        return where(is_pad, self.weight.data[self.padding_idx], rows)
