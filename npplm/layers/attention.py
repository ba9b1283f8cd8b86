"""The attention core shared by every family: heads, masks, softmax(QK^T / sqrt(D)) V.

Glossary: B batch, T query length, S key length, C model width, H heads, D head dim.
Families own their projections (their checkpoint names differ); this file holds the math,
masks.py the masks.

Causal self-attention (GPT, LLaMA) has a fused primitive of its own, `causal_attention`:
the same numbers as `attention` with the dense causal + padding bias, but one graph node,
and on float32 NumPy arrays a Numba kernel (gpu/numba_cpu/attention.py) that computes only
the scores the mask keeps and stores no (B, H, T, S) array; on float32 CuPy arrays a Numba
CUDA kernel does the same (gpu/numba_cuda/attention.py). A family asks for it by passing
a `CausalMask` as the bias. An encoder (BERT, RoBERTa, ALBERT) passes a `PaddingMask`: the
same primitive with causal=False, every query reading every kept key, on the CPU kernel
(the CUDA kernel is causal only; CuPy arrays take the reference).
"""

import math

from autograd import Tensor, array_module, as_array, primitive
from autograd.precision import in_float32, in_float32_vjp
from gpu.numba_cpu import attention as kernels
from gpu.numba_cuda import attention as cuda_kernels
from npplm.layers.masks import PaddingMask, causal_bias
from npplm.layers.softmax import softmax


def split_heads(x, n_heads):
    """(B, T, C) -> (B, H, T, D)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, T, D) -> (B, T, C)."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def attention(q, k, v, bias=None, scale=None, dropout=None):
    """softmax(q k^T * scale + bias) v.

    q (B, H, T, D), k and v (B, H, S, D); bias broadcastable to (B, H, T, S) (0 where
    attending, very negative where not: npplm.layers.masks), a Tensor or an array on any
    device (it moves to the scores' here), or a CausalMask / PaddingMask (the fused
    primitive, below, unless dropout is active); scale defaults to 1/sqrt(D)
    (Vaswani et al., 2017). dropout, if given, is applied to the attention probabilities
    (BERT does).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if isinstance(bias, PaddingMask):  # or a CausalMask
        B, S, causal = q.shape[0], k.shape[-2], bias.causal
        keep = bias.keys(B, S, array_module(as_array(q)))
        if dropout is None or not dropout.training or dropout.p == 0:
            return causal_attention(q, k, v, keep, scale=scale, causal=causal)[0]  # fused
        bias = causal_bias(keep, q.shape[-2], S, as_array(q).dtype, causal)  # dropout
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    if bias is not None:
        if not isinstance(bias, Tensor):
            bias = Tensor(array_module(scores.data).asarray(bias))  # host mask -> device
        scores = scores + bias
    probs = softmax(scores, axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    return probs @ v  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)


# --- causal self-attention as one primitive ------------------------------------------------


def causal_attention_reference(q, k, v, keep, scale, causal=True):
    """(out, lse) = (softmax(x) v, logsumexp(x)) with x = q k^T * scale + causal_bias
    (causal=False: the padding bias alone).

    Exactly `attention`'s arithmetic with the dense bias, written on raw arrays, plus the
    log-sum-exp of each query row (B, H, T), which the kernel keeps for its backward.
    """
    xp = array_module(q)
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    scores = scores + causal_bias(keep, T, S, q.dtype, causal)  # + (B, 1, T or 1, S)
    top = scores.max(axis=-1, keepdims=True)  # (B, H, T, 1)
    e = xp.exp(scores - top)
    total = e.sum(axis=-1, keepdims=True)
    probs = e / total
    return probs @ v, (top + xp.log(total))[..., 0]  # (B, H, T, D), (B, H, T)


def causal_attention_grad_reference(g, g_lse, q, k, v, keep, scale, causal=True):
    """(dq, dk, dv) of causal_attention_reference, given g = dL/dout and g_lse = dL/dlse.

    With p = softmax(x) per row: dL/dp = g v^T + (nothing), and through the softmax and
    the lse (d lse_t / d x_ts = p_ts), dL/dx = p (g v^T - sum_s p g v^T + g_lse); then x's
    two matmul factors, each times scale.
    """
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.swapaxes(-1, -2)) * scale + causal_bias(keep, T, S, q.dtype, causal)
    probs = softmax.fun(scores, axis=-1)  # recomputed, as the kernel does: (B, H, T, S)
    dp = g @ v.swapaxes(-1, -2)  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    dx = probs * (dp - (dp * probs).sum(axis=-1, keepdims=True) + g_lse[..., None])
    dq = (dx @ k) * scale  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)
    dk = (dx.swapaxes(-1, -2) @ q) * scale  # (B, H, S, T) @ (B, H, T, D) -> (B, H, S, D)
    dv = probs.swapaxes(-1, -2) @ g  # (B, H, S, T) @ (B, H, T, D) -> (B, H, S, D)
    return dq, dk, dv


@primitive(multiple_outputs=True)
@in_float32(keep_float32=(1,))
def causal_attention(q, k, v, keep, *, scale, causal=True):
    """(out (B, H, T, D), lse (B, H, T)) of causal attention over the keys `keep` (B, S)
    keeps: `attention(q, k, v, CausalMask(keep))` as one node, with each row's lse;
    causal=False: `attention(q, k, v, PaddingMask(keep))`, an encoder's."""
    if kernels.applies(q, k, v, keep):
        return kernels.attention_forward(q, k, v, keep, scale, causal)  # Numba, float32 NumPy
    if causal and cuda_kernels.applies(q, k, v):
        return cuda_kernels.attention_forward(q, k, v, keep, scale)  # Numba CUDA, CuPy
    return causal_attention_reference(q, k, v, keep, scale, causal)


@causal_attention.defvjp
@in_float32_vjp
def causal_attention_vjp(g, out, q, k, v, keep, *, scale, causal=True):
    (g_out, g_lse), (y, lse) = g, out
    if kernels.applies(q, k, v, keep):
        return (*kernels.attention_backward(g_out, g_lse, q, k, v, keep, y, lse, scale,
                                            causal), None)
    if causal and cuda_kernels.applies(q, k, v):
        return (*cuda_kernels.attention_backward(g_out, g_lse, q, k, v, keep, y, lse, scale),
                None)  # Numba CUDA, float32 CuPy
    return (*causal_attention_grad_reference(g_out, g_lse, q, k, v, keep, scale, causal),
            None)
