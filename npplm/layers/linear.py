"""Linear: y = x W^T + b, with W stored (out, in) as PyTorch and Hugging Face store it."""

import numpy as np

from autograd import Tensor
from npplm.module import Module


def linear(x, weight, bias=None):
    """(..., in) @ (in, out) -> (..., out); `weight` is (out, in), so it is transposed (a view)."""
    y = x @ weight.T  # (..., in) @ (in, out) -> (..., out)
    return y if bias is None else y + bias


class Linear(Module):
    """Owns weight (out, in) ~ N(0, std^2) and bias (out,) = 0."""

    def __init__(self, in_features, out_features, bias=True, std=0.02, rng=None,
                 dtype=np.float32):
        rng = np.random.default_rng(0) if rng is None else rng
        w = rng.standard_normal((out_features, in_features)) * std
        self.weight = Tensor(w.astype(dtype), requires_grad=True)
        self.bias = (Tensor(np.zeros(out_features, dtype=dtype), requires_grad=True)
                     if bias else None)

    def forward(self, x):
        return linear(x, self.weight, self.bias)
