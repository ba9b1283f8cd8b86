"""Linear: y = x W^T + b, with W stored (out, in) as PyTorch and Hugging Face store it.

`linear` is one fused primitive rather than `x @ weight.T + bias` from three: the
composite's weight gradient would come out as the transpose of (in, out), a strided view
that the engine must copy, and the bias would cost a broadcast add forward and a reduction
backward of its own. Fused, each direction is one GEMM per gradient (llm.c's
matmul_forward / matmul_backward), every gradient is born contiguous in the layout of its
parameter, and the bias is added in place. On large float32 NumPy arrays the bias' two
passes (added to every row, its gradient the sum of the rows) run on every core
(gpu/numba_cpu/bias.py); NumPy's `y += bias` and `g.sum(axis=0)` are their references.

The forward picks one of two equal products by the number of rows. Decoding feeds one row
per sequence or beam, and OpenBLAS's GEMM is slow for a skinny x times a transposed W:
computing W x^T and transposing the small result back is 1.1-2.8x faster from 2 to 64
rows on one or two threads, and slower from about 128 rows on (`LinearRows` in
benchmarks/bench_autograd.py). The two differ only in float rounding.
"""

import numpy as np

from autograd import Tensor, primitive
from autograd.precision import in_float32, in_float32_vjp
from gpu.numba_cpu import bias as kernels
from npplm.layers.module import Module, initial_weight

FEW_ROWS = 64  # up to this many rows, the forward computes (W x^T)^T


@primitive
@in_float32
def linear(x, weight, bias=None):
    """(..., in) @ (in, out) + (out,) -> (..., out); `weight` is (out, in)."""
    n_out, n_in = weight.shape
    if x.shape[-1] != n_in:
        raise ValueError(f"linear: input of shape {x.shape} has {x.shape[-1]} features but "
                         f"the weight {weight.shape} expects {n_in}")
    x2 = x.reshape(-1, n_in)  # (N, in), N = all of "..."
    if x2.shape[0] <= FEW_ROWS:
        y = (weight @ x2.T).T.copy()  # (out, in) @ (in, N) -> (out, N), back to (N, out)
    else:
        y = x2 @ weight.T  # (N, in) @ (in, out) -> (N, out)
    if bias is not None and kernels.applies(y, bias):
        kernels.add_bias(y, bias)  # Numba, every core: y[n] += bias for each row n
    elif bias is not None:
        y += bias
    return y.reshape(*x.shape[:-1], n_out)


@linear.defvjp
@in_float32_vjp
def linear_vjp(g, out, x, weight, bias=None):
    # y = x W^T + b:  dx = g W,  dW = g^T x (summed over every row),  db = sum of g's rows
    n_out, n_in = weight.shape
    g2 = g.reshape(-1, n_out)  # (N, out)
    dx = (g2 @ weight).reshape(x.shape)  # (N, out) @ (out, in) -> (N, in)
    dw = g2.T @ x.reshape(-1, n_in)  # (out, N) @ (N, in) -> (out, in)
    if bias is None:
        db = None
    elif kernels.applies(g2):
        db = kernels.bias_grad(g2)  # Numba, every core: the sum of g's rows
    else:
        db = g2.sum(axis=0)
    return dx, dw, db


class Linear(Module):
    """Owns weight (out, in) ~ N(0, std^2) and bias (out,) = 0."""

    def __init__(self, in_features, out_features, bias=True, std=0.02, rng=None,
                 dtype=np.float32):
        rng = np.random.default_rng(0) if rng is None else rng
        w = initial_weight(rng, (out_features, in_features), std, dtype)
        self.weight = Tensor(w, requires_grad=True)
        self.bias = (Tensor(np.zeros(out_features, dtype=dtype), requires_grad=True)
                     if bias else None)

    @classmethod
    def tied(cls, weight, bias=None):
        """A Linear that owns no weight of its own: `weight` is another module's Tensor,
        an embedding table (V, C) for an LM head that reads out with the input table."""
        head = cls.__new__(cls)
        head.weight, head.bias = weight, bias
        return head

    def forward(self, x):
        return linear(x, self.weight, self.bias)
