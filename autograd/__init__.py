"""autograd: npplm's small reverse-mode automatic differentiation engine.

Unrelated to the HIPS `autograd` package, whose top-level name it shares (so npplm lives in
its own virtual environment). Read it in this order:

    backend.py    NPPLM_BACKEND=numpy|cupy|strict, read once at import; array_module(x)
    strict.py     the strict backend: NumPy with CuPy's rules, to test the GPU path on a CPU
    tensor.py     Tensor: .data, .grad, .requires_grad, Python operators, .backward()
    graph.py      Node, the iterative topological sort, backward, no_grad
    primitive.py  @primitive / .defvjp and the REGISTRY of every differentiable op
    ops/          the primitives, each forward with its VJP below it: elementwise.py,
                  reduce.py, shape.py, linalg.py
    gradcheck.py  finite-difference checking, for our tests and for yours
    checkpoint.py activation checkpointing: keep a block's inputs, replay it in backward

Gradients are first-order only: VJPs compute on raw arrays, not on Tensors, so a gradient
has no graph of its own (no double backprop). That keeps every VJP plain array code.

The engine holds the math every model is made of and nothing model-specific: the fused
neural-network primitives (softmax, cross-entropy, layer norms, attention, dropout) live
with the layers in npplm/layers/, beside the kernels they dispatch to. Importing it changes
nothing in the process, and no primitive here computes differently depending on what else
has been imported.
"""

from autograd.backend import BACKEND, BACKENDS, BackendError, array_module, to_numpy, xp
from autograd.graph import enable_grad, is_grad_enabled, no_grad
from autograd.tensor import DEFAULT_DTYPE, Tensor, as_array
from autograd.primitive import REGISTRY, Primitive, primitive, unbroadcast
from autograd.ops.elementwise import (
    abs, add, astype, clip, div, erf, exp, log, maximum, minimum, mul, neg, pow, relu,
    sigmoid, sqrt, sub, tanh, where,
)
from autograd.ops.reduce import logsumexp, max, mean, sum, var
from autograd.ops.shape import (
    broadcast_to, concatenate, expand_dims, getitem, pad, reshape, split, squeeze, stack,
    transpose,
)
from autograd.ops.linalg import matmul
from autograd.gradcheck import GradcheckError, gradcheck, numerical_grad
from autograd.checkpoint import checkpoint

permute = transpose

__all__ = [
    "BACKEND", "BACKENDS", "BackendError", "DEFAULT_DTYPE", "GradcheckError", "Primitive",
    "REGISTRY", "Tensor", "abs", "add", "array_module", "as_array", "astype", "broadcast_to",
    "checkpoint", "clip", "concatenate", "div", "enable_grad", "erf", "exp", "expand_dims",
    "getitem", "gradcheck", "is_grad_enabled", "log", "logsumexp", "matmul", "max", "maximum",
    "mean", "minimum", "mul", "neg", "no_grad", "numerical_grad", "pad", "permute", "pow",
    "primitive", "relu", "reshape", "sigmoid", "split", "sqrt", "squeeze", "stack", "sub", "sum",
    "tanh", "to_numpy", "transpose", "unbroadcast", "var", "where", "xp"
]
