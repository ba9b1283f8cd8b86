"""Dropout (Srivastava et al., JMLR 2014): zero each element with probability p while
training, scale the survivors by 1 / (1 - p) so that the expected value is unchanged.

`dropout_with_mask` is the primitive: the mask is an input, drawn outside it, so that the
gradient is the same mask and scale (and the primitive is deterministic, hence
gradient-checkable). `dropout` draws the mask from an explicit generator, and `Dropout` is
the module: active in training mode, the identity in eval mode, with its own generator
seeded from the model's, so that a model seed fixes every mask and no two layers draw the
same ones.
"""

import numpy as np

from autograd import Tensor, array_module, primitive
from autograd.precision import is_half
from npplm.layers.module import Module


@primitive(name="dropout")
def dropout_with_mask(x, keep, *, p):
    """x * keep / (1 - p): the elements where `keep` is False are zeroed."""
    return array_module(x).where(keep, x * (1.0 / (1.0 - p)), 0)


@dropout_with_mask.defvjp
def dropout_with_mask_vjp(g, out, x, keep, *, p):
    return array_module(g).where(keep, g * (1.0 / (1.0 - p)), 0), None


def dropout(x, p, rng, training=True):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    `rng` is an explicit generator (`numpy.random.default_rng(seed)`), so runs are
    reproducible; the mask is drawn on the host and moved to x's device. Out of training,
    or with p == 0, x is returned unchanged.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p={p} must be in [0, 1)")
    if not training or p == 0.0:
        return x
    if rng is None:
        raise ValueError("dropout needs an explicit random generator, e.g. "
                         "numpy.random.default_rng(0)")
    data = x.data if isinstance(x, Tensor) else x  # (an ndarray's .data is its buffer)
    draw = "float32" if is_half(data) else data.dtype  # (NumPy draws float32 or float64 only)
    keep = array_module(data).asarray(rng.random(data.shape, dtype=draw) >= p)
    return dropout_with_mask(x, keep, p=p)


class Dropout(Module):
    """Zero each element with probability p while training; its own seeded generator.

    rng: the model's generator, from which this layer draws its seed (one draw), or None
    for `seed`.
    """

    def __init__(self, p, rng=None, seed=0):
        self.p = p
        if rng is not None:
            seed = int(rng.integers(2**31))
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        return dropout(x, self.p, self.rng, training=self.training)
