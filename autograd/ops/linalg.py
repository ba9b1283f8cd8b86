"""Matrix multiplication with NumPy's batch broadcasting.

For C = A @ B with A (..., M, K) and B (..., K, N):
    dA = dC @ B^T   (..., M, N) @ (..., N, K) -> (..., M, K)
    dB = A^T @ dC   (..., K, M) @ (..., M, N) -> (..., K, N)
then summed over any batch axes that broadcasting created. A 1-D operand is treated as a
row (on the left) or a column (on the right), as NumPy does, and its axis removed after.
"""

from autograd.backend import array_module
from autograd.precision import in_float32, in_float32_vjp
from autograd.primitive import primitive, unbroadcast


@primitive
@in_float32  # 16-bit operands: accumulated in float32 (autograd/precision.py)
def matmul(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dimension, got shapes "
                         f"{a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if k_a != k_b:
        raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
                         f"({k_a} != {k_b})")
    if a.ndim > 2 and b.ndim == 2:
        # (..., M, K) @ (K, N): one large GEMM on (...*M, K) instead of a loop over the batch
        return (a.reshape(-1, k_a) @ b).reshape(*a.shape[:-1], b.shape[1])
    try:
        return array_module(a, b).matmul(a, b)
    except ValueError:
        raise ValueError(f"matmul: batch shapes {a.shape[:-2]} and {b.shape[:-2]} do not "
                         "broadcast") from None


@matmul.defvjp
@in_float32_vjp
def matmul_vjp(g, out, a, b):
    xp = array_module(g)
    if a.ndim > 2 and b.ndim == 2:  # the shared-weight case of the forward, kept as one GEMM
        n = b.shape[1]
        ga = (g.reshape(-1, n) @ b.T).reshape(a.shape)  # (...M, N) @ (N, K)
        gb = a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, n)  # (K, ...M) @ (...M, N)
        return ga, gb
    if a.ndim == 1 and b.ndim == 1:  # a dot product: out and g are scalars
        return g * b, g * a
    a2 = a[None, :] if a.ndim == 1 else a  # (K,) -> (1, K)
    b2 = b[:, None] if b.ndim == 1 else b  # (K,) -> (K, 1)
    if a.ndim == 1:
        g = xp.expand_dims(g, -2)  # restore the M = 1 axis
    if b.ndim == 1:
        g = xp.expand_dims(g, -1)  # restore the N = 1 axis
    ga = xp.matmul(g, xp.swapaxes(b2, -1, -2))  # (..., M, N) @ (..., N, K) -> (..., M, K)
    gb = xp.matmul(xp.swapaxes(a2, -1, -2), g)  # (..., K, M) @ (..., M, N) -> (..., K, N)
    ga, gb = unbroadcast(ga, a2.shape), unbroadcast(gb, b2.shape)
    if a.ndim == 1:
        ga = ga.reshape(a.shape)  # reshape only when needed: it returns a view
    if b.ndim == 1:
        gb = gb.reshape(b.shape)
    return ga, gb
