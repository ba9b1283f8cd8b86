"""Rotary position embeddings (RoPE): position enters attention as a rotation of q and k.

Paper: Su, Lu, Pan, Murtadha, Wen and Liu, "RoFormer: Enhanced Transformer with Rotary
Position Embedding" (2021), arXiv:2104.09864. LLaMA-3's frequency scaling: Grattafiori et
al., "The Llama 3 Herd of Models" (2024), arXiv:2407.21783 (the rule itself is published in
Meta's llama-models code, `apply_scaling`). Reference implementation: Hugging Face
transformers, `modeling_rope_utils.py` (`_compute_default_rope_parameters`,
`_compute_llama3_parameters`) and `models/llama/modeling_llama.py` (`rotate_half`,
`apply_rotary_pos_emb`).

The idea. Split a head vector of D dims into D/2 pairs; rotate pair i of the vector at
position m by the angle m * w_i, with frequencies w_i = theta^(-2i/D), i = 0..D/2-1 (theta,
the "base", is 10000 in LLaMA-1/2 and 500000 in LLaMA-3). A rotation keeps norms, and
rotating q by m w and k by n w leaves q . k depending on m - n only:
    <R(m w) q, R(n w) k> = <q, R((n - m) w) k>
so attention scores see relative positions although each vector was rotated by its
absolute position, and nothing is learned (no position table to outgrow).

Which dims form a pair. The paper pairs neighbours (0, 1), (2, 3), ...; Hugging Face's
LLaMA (and its checkpoints, whose q_proj/k_proj rows were permuted on conversion to suit
it) pairs dim i with dim i + D/2. Then the rotation of the whole vector reads
    rope(x) = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1]
with cos and sin of the angles m * w_i repeated over both halves, (..., D). We follow
Hugging Face, so its checkpoints load unchanged.

The functions:
    rope_frequencies(D, theta, scaling)  w_i, (D/2,), float64
    rope_cos_sin(positions, w, dtype)    cos, sin tables (..., T, D): raw arrays, constants
    rotate_half(x)                       on Tensors, from autograd primitives
    apply_rotary(x, cos, sin)            one fused primitive, its VJP the inverse rotation
Composed from getitem, neg, concatenate, mul and add, apply_rotary would make six graph
nodes and as many (B, H, T, D) temporaries each way, for q and k of every layer. Fused, it
is one node; `rotary_reference` and `rotary_grad_reference` hold its readable NumPy
formula, and on large float32 NumPy arrays a Numba kernel (gpu/numba_cpu/rotary.py), on
float32 CuPy arrays a Numba CUDA kernel (gpu/numba_cuda/rotary.py), computes the same
numbers in one pass each way.

The gradient. rope(x) = x * c + R x * s, with R = rotate_half the linear map
    R [x1, x2] = [-x2, x1],   as a matrix  R = [[0, -I], [I, 0]]   (blocks of D/2),
and c, s constants (no gradient: they are functions of the integer positions). Then
    dL/dx = c * g + R^T (s * g),   R^T = [[0, I], [-I, 0]]:  R^T [y1, y2] = [y2, -y1]
term by term: d(x * c) gives c * g; d(R x * s) = R^T applied to s * g (the transpose of an
elementwise product is itself, that of a linear map its transpose). Written out per pair,
    dx_j         = g_j c_j + g_{j+D/2} s_{j+D/2}
    dx_{j+D/2}   = g_{j+D/2} c_{j+D/2} - g_j s_j
With RoPE's tables (c and s the same on both halves) and R^T = -R this is
g * c - R g * s = rope(g) at angles -m w_i: the transpose of a rotation is the rotation
back, as it must be for an orthogonal map.

Glossary: B batch, H heads, T positions, D head dim.
"""

import math

import numpy as np

from autograd import array_module, concatenate, primitive
from gpu.numba_cpu import rotary as kernels
from gpu.numba_cuda import rotary as cuda_kernels

ROPE_TYPES = ("default", "llama3")


def rope_frequencies(head_dim, theta=10000.0, scaling=None):
    """The D/2 angular frequencies w_i = theta^(-2i/D), optionally LLaMA-3-scaled.

    `scaling` is None (plain RoPE) or a mapping with rope_type "llama3" and its four
    parameters (Hugging Face's `rope_parameters`, LLaMA-3.1's config.json):
        factor                            8: how much longer the context becomes
        low_freq_factor, high_freq_factor 1 and 4: where the interpolation band lies
        original_max_position_embeddings  8192: the context length pre-trained on
    LLaMA-3.1 stretches the long wavelengths only. With L0 the original context and
    wavelength lambda_i = 2 pi / w_i:
        lambda_i < L0 / high_freq_factor   kept (short waves: local order, already seen
                                           many full turns in training)
        lambda_i > L0 / low_freq_factor    w_i / factor (long waves: positions beyond L0
                                           would reach angles never seen in training)
        in between                         (1 - s) w_i / factor + s w_i, a smooth blend,
                                           s = (L0 / lambda_i - low) / (high - low)
    Computed in float64 (Hugging Face computes in float32; the two differ by ~1e-7).
    """
    if head_dim % 2:
        raise ValueError(f"rope_frequencies: head_dim={head_dim} must be even (pairs of dims)")
    w = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
    rope_type = "default" if scaling is None else scaling.get("rope_type", "default")
    if rope_type == "default":
        return w
    if rope_type != "llama3":
        raise ValueError(f"rope_frequencies: rope_type {rope_type!r} is not implemented; "
                         f"known: {ROPE_TYPES}")
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / w
    scaled = np.where(wavelength > old_context / low, w / factor, w)
    s = (old_context / wavelength - low) / (high - low)
    blended = (1 - s) * scaled / factor + s * scaled
    medium = (wavelength >= old_context / high) & (wavelength <= old_context / low)
    return np.where(medium, blended, scaled)


def rope_cos_sin(positions, frequencies, dtype=np.float32):
    """cos and sin of the angles position * w_i, each repeated over the two halves of D.

    positions (..., T) integers (any leading shape, e.g. (B, T) or (T,)); frequencies
    (D/2,) -> cos, sin of shape (..., T, D) in `dtype`. Raw arrays, not Tensors: they are
    constants of the input, with no gradient. The angles are formed in float64 so that
    position 100000 keeps its precision, then cast.
    """
    xp = array_module(positions)
    angles = positions[..., None].astype(np.float64) * xp.asarray(frequencies)  # (..., T, D/2)
    angles = xp.concatenate([angles, angles], axis=-1)  # (..., T, D/2) -> (..., T, D)
    return xp.cos(angles).astype(dtype), xp.sin(angles).astype(dtype)


def rotate_half(x):
    """[x1, x2] -> [-x2, x1] on the last axis, x1 and x2 its halves: (..., D) -> (..., D).

    This is multiplication by i if (x1_j, x2_j) is read as the complex number x1_j + i x2_j.
    """
    half = x.shape[-1] // 2
    return concatenate(-x[..., half:], x[..., :half], axis=-1)


def rotate_half_array(x):
    """rotate_half on a raw array: [x1, x2] -> [-x2, x1] on the last axis."""
    half = x.shape[-1] // 2
    return array_module(x).concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rotate_half_transposed(y):
    """R^T of rotate_half on a raw array: [y1, y2] -> [y2, -y1] (= -rotate_half(y))."""
    half = y.shape[-1] // 2
    return array_module(y).concatenate([y[..., half:], -y[..., :half]], axis=-1)


def heads_broadcast(cos, sin):
    """(B, T, D) tables -> (B, 1, T, D): the same angles for every head; (T, D) as is."""
    if cos.ndim == 3:
        return cos[:, None], sin[:, None]
    return cos, sin


def rotary_reference(x, cos, sin):
    """rope(x) = x * cos + rotate_half(x) * sin on raw arrays, (B, H, T, D)."""
    cos, sin = heads_broadcast(cos, sin)
    return x * cos + rotate_half_array(x) * sin


def rotary_grad_reference(g, cos, sin):
    """dL/dx = g * cos + rotate_half^T(g * sin), (B, H, T, D): the module docstring's VJP."""
    cos, sin = heads_broadcast(cos, sin)
    return g * cos + rotate_half_transposed(g * sin)


@primitive
def apply_rotary(x, cos, sin):
    """rope(x) = x * cos + rotate_half(x) * sin, rotating each pair (x_j, x_{j + D/2}).

    x (B, H, T, D) Tensor (any strides); cos, sin (T, D) or (B, T, D) arrays (one table per
    sequence, for left-padded batches), constants -> (B, H, T, D). Hugging Face's
    `apply_rotary_pos_emb`, as one graph node.
    """
    if kernels.applies(x, cos, sin):
        return kernels.rotary_forward(x, cos, sin)  # Numba, float32 NumPy
    if cuda_kernels.applies(x, cos, sin):
        return cuda_kernels.rotary_forward(x, cos, sin)  # Numba CUDA, float32 CuPy
    return rotary_reference(x, cos, sin)


@apply_rotary.defvjp
def apply_rotary_vjp(g, out, x, cos, sin):
    # cos and sin are constants of the positions: no gradient (None).
    if kernels.applies(g, cos, sin):
        return kernels.rotary_backward(g, cos, sin), None, None
    if cuda_kernels.applies(g, cos, sin):
        return cuda_kernels.rotary_backward(g, cos, sin), None, None  # Numba CUDA
    return rotary_grad_reference(g, cos, sin), None, None
