"""autograd: npplm's small reverse-mode automatic differentiation engine.

Unrelated to the HIPS `autograd` package, whose top-level name it shares (so npplm lives in
its own virtual environment). Read it in this order:

    backend.py    NPPLM_BACKEND=numpy|cupy, read once at import; array_module(x)
    tensor.py     Tensor: .data, .grad, .requires_grad, Python operators, .backward()
    graph.py      Node, the iterative topological sort, backward, no_grad
    primitive.py  @primitive / .defvjp and the REGISTRY of every differentiable op
    ops/          the primitives, each forward with its VJP below it
    gradcheck.py  finite-difference checking, for our tests and for yours
    memory.py     malloc tuning so large temporaries reuse memory (NPPLM_KEEP_MEMORY=0: off)

Gradients are first-order only: VJPs compute on raw arrays, not on Tensors, so a gradient
has no graph of its own (no double backprop). That keeps every VJP plain array code.
"""

from autograd.backend import BACKEND, BACKENDS, BackendError, array_module, to_numpy, xp
from autograd import memory  # keeps freed memory in the process: see memory.py
from autograd.graph import is_grad_enabled, no_grad
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
from autograd.ops.nn import cross_entropy, dropout, log_softmax, softmax
from autograd.gradcheck import GradcheckError, gradcheck, numerical_grad

permute = transpose

__all__ = [
    "BACKEND", "BACKENDS", "BackendError", "DEFAULT_DTYPE", "GradcheckError", "Primitive",
    "REGISTRY", "Tensor", "abs", "add", "array_module", "as_array", "astype", "broadcast_to",
    "clip",
    "concatenate", "cross_entropy", "div", "dropout", "erf", "exp", "expand_dims", "getitem",
    "gradcheck", "is_grad_enabled", "log", "log_softmax", "logsumexp", "matmul", "max",
    "maximum", "mean", "minimum", "mul", "neg", "no_grad", "numerical_grad", "pad", "permute",
    "pow", "primitive", "relu", "reshape", "sigmoid", "softmax", "split", "sqrt", "squeeze",
    "stack", "sub", "sum", "tanh", "to_numpy", "transpose", "unbroadcast", "var", "where", "xp",
]
