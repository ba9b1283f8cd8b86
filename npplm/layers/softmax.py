"""softmax and log_softmax as fused primitives, along the last axis by default.

Each could be composed from smaller primitives (exp, sum, div, logsumexp; the tests do
exactly that, as oracles), but fused they save memory and time, and their gradients take
their simplest form:

    softmax(x)_i     = exp(x_i - m) / sum_j exp(x_j - m)      m = max(x), for stability
                       dL/dx_j = s_j (g_j - sum_i g_i s_i)     (s = softmax(x), g = dL/ds)
    log_softmax(x)_i = x_i - logsumexp(x)
                       dL/dx_j = g_j - softmax(x)_j sum_i g_i

Along the last axis, large float32 NumPy arrays take Numba kernels
(gpu/numba_cpu/softmax.py) and float32 CuPy arrays Numba CUDA kernels
(gpu/numba_cuda/softmax.py): one visible dispatch line each, before the reference that
every other array (float64, small, another axis) computes. losses.py's cross-entropy
reuses them.
"""

from autograd import array_module, primitive
from autograd.precision import in_float32, in_float32_vjp
from gpu.numba_cpu import softmax as kernels
from gpu.numba_cuda import softmax as cuda_kernels


def softmax_reference(x, axis=-1):
    xp = array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_reference(x, axis=-1):
    xp = array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


@primitive
@in_float32
def softmax(x, *, axis=-1):
    """softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m), with m = max(x) for stability."""
    if kernels.applies(axis, x):
        return kernels.softmax_forward(x)  # Numba, large float32 NumPy
    if cuda_kernels.applies(axis, x):
        return cuda_kernels.softmax_forward(x)  # Numba CUDA, float32 CuPy
    return softmax_reference(x, axis)


@softmax.defvjp
@in_float32_vjp
def softmax_vjp(g, out, x, *, axis=-1):
    # With s = softmax(x): ds_i/dx_j = s_i (delta_ij - s_j), so
    # dL/dx_j = sum_i g_i s_i (delta_ij - s_j) = s_j (g_j - sum_i g_i s_i).
    if kernels.applies(axis, g, out):
        return (kernels.softmax_backward(g, out),)
    if cuda_kernels.applies(axis, g, out):
        return (cuda_kernels.softmax_backward(g, out),)
    return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)


@primitive
@in_float32
def log_softmax(x, *, axis=-1):
    """log_softmax(x)_i = x_i - logsumexp(x)."""
    if kernels.applies(axis, x):
        return kernels.log_softmax_forward(x)  # Numba, large float32 NumPy
    if cuda_kernels.applies(axis, x):
        return cuda_kernels.log_softmax_forward(x)  # Numba CUDA, float32 CuPy
    return log_softmax_reference(x, axis)


@log_softmax.defvjp
@in_float32_vjp
def log_softmax_vjp(g, out, x, *, axis=-1):
    # d(x_i - lse)/dx_j = delta_ij - softmax_j, so dL/dx_j = g_j - softmax_j * sum_i g_i.
    if kernels.applies(axis, g, out):
        return (kernels.log_softmax_backward(g, out),)
    if cuda_kernels.applies(axis, g, out):
        return (cuda_kernels.log_softmax_backward(g, out),)
    xp = array_module(g)
    return (g - xp.exp(out) * g.sum(axis=axis, keepdims=True),)
