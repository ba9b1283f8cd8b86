"""Activation functions of the source chapter's models, as fused primitives.

Composed from erf/tanh/mul primitives each would take four to six array passes and keep as
many intermediates; fused, one pass each way. The composite forms are the test oracles.
The two GELUs, the largest elementwise op of BERT's and GPT's feed-forward layers, and
LLaMA's SiLU also have Numba kernels (gpu/numba_cpu/activations.py) that take large
float32 NumPy arrays; the `*_reference` functions here are what they must equal, and what
everything else runs.

    gelu       BERT, RoBERTa, ALBERT, GPT-1, GLM   x * Phi(x), the exact (erf) form
    gelu_tanh  GPT-2, GPT-3, T5 v1.1                the tanh approximation ("gelu_new")
    silu       LLaMA's SwiGLU gate                  x * sigmoid(x)
ReLU (T5 v1.0) is the engine's `relu`.
"""

import math

from autograd import array_module, erf, primitive
from autograd.precision import in_float32, in_float32_vjp
from gpu.numba_cpu import activations as kernels

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_reference(x):
    """GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))  (Hendrycks & Gimpel, 1606.08415)."""
    return 0.5 * x * (1 + erf.fun(x * _SQRT_HALF))


def gelu_grad_reference(g, x):
    # d/dx [x Phi(x)] = Phi(x) + x phi(x), with phi the standard normal density.
    xp = array_module(x)
    cdf = 0.5 * (1 + erf.fun(x * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
    return g * (cdf + x * pdf)


@primitive
@in_float32
def gelu(x):
    """GELU, exact (erf) form."""
    return kernels.gelu_forward(x) if kernels.applies(x) else gelu_reference(x)


@gelu.defvjp
@in_float32_vjp
def gelu_vjp(g, out, x):
    return (kernels.gelu_backward(g, x) if kernels.applies(g, x) else gelu_grad_reference(g, x),)


def gelu_tanh_reference(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's approximation of GELU."""
    xp = array_module(x)
    return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


def gelu_tanh_grad_reference(g, x):
    # With u = sqrt(2/pi) (x + 0.044715 x^3) and t = tanh(u):
    #   d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    xp = array_module(x)
    t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
    du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)


@primitive
@in_float32
def gelu_tanh(x):
    """GELU, tanh approximation."""
    return kernels.gelu_tanh_forward(x) if kernels.applies(x) else gelu_tanh_reference(x)


@gelu_tanh.defvjp
@in_float32_vjp
def gelu_tanh_vjp(g, out, x):
    if kernels.applies(g, x):
        return (kernels.gelu_tanh_backward(g, x),)
    return (gelu_tanh_grad_reference(g, x),)


def silu_reference(x):
    """SiLU(x) = x * sigmoid(x)  (also "swish"; Elfwing et al., 1702.03118)."""
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))  # the overflow-free sigmoid, as in autograd's primitive
    return x * xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def silu_grad_reference(g, x):
    # d/dx [x s(x)] = s + x s (1 - s)
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))
    s = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return g * (s + x * s * (1 - s))


@primitive
@in_float32
def silu(x):
    """SiLU, LLaMA's SwiGLU gate."""
    return kernels.silu_forward(x) if kernels.applies(x) else silu_reference(x)


@silu.defvjp
@in_float32_vjp
def silu_vjp(g, out, x):
    return (kernels.silu_backward(g, x) if kernels.applies(g, x) else silu_grad_reference(g, x),)


ACTIVATIONS = {"gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh,
               "silu": silu, "swish": silu}  # Hugging Face's `hidden_act` names


def activation(name):
    """The activation a Hugging Face config names in `hidden_act`."""
    if name == "relu":
        from autograd import relu

        return relu
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: "
                         f"{', '.join(sorted([*ACTIVATIONS, 'relu']))}") from None
