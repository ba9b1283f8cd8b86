"""The attention core shared by every family: heads, masks, softmax(QK^T / sqrt(D)) V.

Glossary: B batch, T query length, S key length, C model width, H heads, D head dim.
Families own their projections (their checkpoint names differ); this file holds the math.
"""

import math

import numpy as np

from autograd import Tensor, as_array, softmax, to_numpy


def split_heads(x, n_heads):
    """(B, T, C) -> (B, H, T, D)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, T, D) -> (B, T, C)."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def padding_mask(attention_mask, batch, length, dtype=np.float32):
    """A (B, S) 1/0 mask (1 = attend) as an additive (B, 1, 1, S) bias: 0 or the dtype's min.

    The most negative finite value rather than -inf, as Hugging Face does: a row with
    every key masked then gets a uniform softmax instead of nan.
    """
    mask = to_numpy(as_array(attention_mask))
    if mask.shape != (batch, length):
        raise ValueError(f"attention_mask has shape {mask.shape} but the input ids have "
                         f"{(batch, length)}: they must be equal")
    bias = np.where(mask.astype(bool), 0.0, np.finfo(dtype).min).astype(dtype)
    return bias[:, None, None, :]  # (B, S) -> (B, 1, 1, S)


def causal_mask(T, S, dtype=np.float32):
    """(T, S) additive bias letting query t see keys up to S - T + t (the cached prefix too)."""
    allowed = np.tril(np.ones((T, S), dtype=bool), k=S - T)
    return np.where(allowed, 0.0, np.finfo(dtype).min).astype(dtype)


def attention(q, k, v, bias=None, scale=None, dropout=None):
    """softmax(q k^T * scale + bias) v.

    q (B, H, T, D), k and v (B, H, S, D); bias broadcastable to (B, H, T, S) (0 where
    attending, very negative where not); scale defaults to 1/sqrt(D) (Vaswani et al., 2017).
    dropout, if given, is applied to the attention probabilities (BERT does).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    if bias is not None:
        scores = scores + (bias if isinstance(bias, Tensor) else Tensor(bias))
    probs = softmax(scores, axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    return probs @ v  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)
