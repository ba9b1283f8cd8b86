"""LayerNorm and RMSNorm over the last axis, as fused primitives with derived VJPs.

Both could be composed from mean/var/sqrt primitives (the tests do exactly that, as
oracles); fused, they take one pass forward and one backward and keep no intermediates.
The backward recomputes the normalised input from x, as llm.c's layernorm does from its
saved mean and rstd.

The `*_reference` functions hold the math and run for float64 (the gradient checks), CuPy
and small arrays; large float32 NumPy arrays take Numba kernels (gpu/numba_cpu/
normalization.py: one parallel pass a row, deterministic parameter-gradient sums), and
float32 CuPy arrays Numba CUDA kernels (gpu/numba_cuda/normalization.py), each tested
against these references in float64.

Glossary: C is the normalised (last) axis; x has shape (..., C); weight and bias (C,).
"""

import numpy as np

from autograd import Tensor, array_module, primitive
from autograd.precision import in_float32, in_float32_vjp
from gpu.numba_cpu import normalization as kernels
from gpu.numba_cuda import normalization as cuda_kernels
from npplm.layers.module import Module


def _sum_over_batch(a):
    """Sum every axis but the last: (..., C) -> (C,)."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


def _check(name, x, *params):
    for p in params:
        if p.shape != x.shape[-1:]:
            raise ValueError(f"{name}: a parameter of shape {p.shape} does not match the "
                             f"last axis of an input of shape {x.shape}")


def layer_norm_reference(x, weight, bias, eps):
    """y = (x - mean) / sqrt(var + eps) * weight + bias  (Ba et al., 2016, arXiv:1607.06450).

    mean and var (biased, 1/C) are taken over the last axis.
    """
    xp = array_module(x)
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    rstd = 1 / xp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    return centered * rstd * weight + bias


def layer_norm_grad_reference(g, x, weight, eps):
    # With xhat = (x - mean) * rstd and y = xhat * w + b:
    #   dL/db = sum g            dL/dw = sum g * xhat         (sums over the batch axes)
    #   dL/dxhat = g * w = d
    # xhat depends on x directly, through the mean and through rstd. Collecting the three
    # paths (llm.c's layernorm_backward walks through this term by term):
    #   dL/dx = rstd * (d - mean(d) - xhat * mean(d * xhat))
    xp = array_module(x)
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    rstd = 1 / xp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    xhat = centered * rstd
    d = g * weight
    dx = rstd * (d - d.mean(axis=-1, keepdims=True)
                 - xhat * (d * xhat).mean(axis=-1, keepdims=True))
    return dx, _sum_over_batch(g * xhat), _sum_over_batch(g)


@primitive
@in_float32
def layer_norm(x, weight, bias, *, eps=1e-5):
    """LayerNorm over the last axis: `layer_norm_reference`, or its kernel on float32."""
    _check("layer_norm", x, weight, bias)
    if kernels.applies(x, weight, bias):
        return kernels.layer_norm_forward(x, weight, bias, eps)  # Numba, float32 NumPy
    if cuda_kernels.applies(x, weight, bias):
        return cuda_kernels.layer_norm_forward(x, weight, bias, eps)  # Numba CUDA, CuPy
    return layer_norm_reference(x, weight, bias, eps)


@layer_norm.defvjp
@in_float32_vjp
def layer_norm_vjp(g, out, x, weight, bias, *, eps=1e-5):
    if kernels.applies(x, weight, g):
        return kernels.layer_norm_backward(g, x, weight, eps)  # Numba, float32 NumPy
    if cuda_kernels.applies(x, weight, g):
        return cuda_kernels.layer_norm_backward(g, x, weight, eps)  # Numba CUDA, CuPy
    return layer_norm_grad_reference(g, x, weight, eps)


def rms_norm_reference(x, weight, eps):
    """y = x / sqrt(mean(x^2) + eps) * weight  (Zhang & Sennrich, 2019, arXiv:1910.07467).

    No mean subtraction, no bias: the norm of T5 and LLaMA.
    """
    xp = array_module(x)
    return x / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight


def rms_norm_grad_reference(g, x, weight, eps):
    # With r = sqrt(mean(x^2) + eps), xhat = x / r, y = xhat * w:
    #   dL/dw = sum g * xhat;   d = g * w
    #   dL/dx = (d - xhat * mean(d * xhat)) / r        (the mean term is r's dependence on x)
    xp = array_module(x)
    r = xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    xhat = x / r
    d = g * weight
    dx = (d - xhat * (d * xhat).mean(axis=-1, keepdims=True)) / r
    return dx, _sum_over_batch(g * xhat)


@primitive
@in_float32
def rms_norm(x, weight, *, eps=1e-6):
    """RMSNorm over the last axis: `rms_norm_reference`, or its kernel on float32."""
    _check("rms_norm", x, weight)
    if kernels.applies(x, weight):
        return kernels.rms_norm_forward(x, weight, eps)  # Numba, float32 NumPy
    if cuda_kernels.applies(x, weight):
        return cuda_kernels.rms_norm_forward(x, weight, eps)  # Numba CUDA, float32 CuPy
    return rms_norm_reference(x, weight, eps)


@rms_norm.defvjp
@in_float32_vjp
def rms_norm_vjp(g, out, x, weight, *, eps=1e-6):
    if kernels.applies(x, weight, g):
        return kernels.rms_norm_backward(g, x, weight, eps)  # Numba, float32 NumPy
    if cuda_kernels.applies(x, weight, g):
        return cuda_kernels.rms_norm_backward(g, x, weight, eps)  # Numba CUDA, float32 CuPy
    return rms_norm_grad_reference(g, x, weight, eps)


class LayerNorm(Module):
    """Owns weight (ones) and bias (zeros) of shape (C,); calls `layer_norm`."""

    def __init__(self, dim, eps=1e-5, dtype=np.float32):
        self.weight = Tensor(np.ones(dim, dtype=dtype), requires_grad=True)
        self.bias = Tensor(np.zeros(dim, dtype=dtype), requires_grad=True)
        self.eps = eps

    def forward(self, x):
        return layer_norm(x, self.weight, self.bias, eps=self.eps)


class RMSNorm(Module):
    """Owns weight (ones) of shape (C,); calls `rms_norm`."""

    def __init__(self, dim, eps=1e-6, dtype=np.float32):
        self.weight = Tensor(np.ones(dim, dtype=dtype), requires_grad=True)
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, eps=self.eps)
