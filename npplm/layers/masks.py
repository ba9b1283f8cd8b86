"""Which keys a query may read, as booleans and as the additive bias attention adds.

Masks are decided as booleans first ("may attend"), combined with `&`, and turned into a
bias once, by `additive_mask`: 0 where allowed, the dtype's most negative finite value
where not. Not -inf, as Hugging Face does: a row with every key masked then gets a uniform
softmax instead of nan; and never two minima added (that would be -inf again). In float16
the bias is half its minimum, -32752: float16's range is so short that its minimum plus a
score below -16 overflows to -inf (with NumPy's overflow warning, and nan for a row that
reads no key); with half, any score above -32768 stays finite, and exp still gives 0.

Integer bookkeeping stays on the host: masks and positions are NumPy arrays, built from
the user's 1/0 attention mask; a model moves a bias to its weights' device where it meets
the scores (or `attention` does, for a CausalMask).

    additive_mask       bool "may attend" -> 0 / dtype min
    padding_mask        (B, S) 1/0 -> (B, 1, 1, S) bias (encoders: BERT, RoBERTa, ALBERT)
    causal_mask         (T, S) bias: query t sees keys up to S - T + t
    PaddingMask         padding only, described rather than written out, so that a fused
                        kernel can skip the padding keys (encoders: BERT, RoBERTa, ALBERT)
    CausalMask          causal + padding, the same way, so that the kernel also skips the
                        masked triangle (GPT, LLaMA)
    causal_bias         a CausalMask written out as a (B, 1, T, S) bias; with
                        causal=False, a PaddingMask's (B, 1, 1, S)
    positions_from_mask positions of the real tokens of left-padded rows (GPT, LLaMA)
"""

from dataclasses import dataclass

import numpy as np

from autograd import array_module, as_array, to_numpy


def additive_mask(allowed, dtype):
    """Boolean "may attend" (any shape) -> additive bias of `dtype`: 0, or its minimum
    (half of it in float16, see above)."""
    xp = array_module(allowed)
    low = np.finfo(dtype).min
    if np.dtype(dtype) == np.float16:
        low = low / 2  # -32752: room below for a score before -inf
    return xp.where(allowed, 0.0, low).astype(dtype)


def check_attention_mask(attention_mask, batch, length):
    """The user's (B, S) 1/0 mask as a NumPy array, its shape checked against the input's."""
    mask = to_numpy(as_array(attention_mask))
    if mask.shape != (batch, length):
        raise ValueError(f"attention_mask has shape {mask.shape} but the input ids have "
                         f"{(batch, length)}: they must be equal")
    return mask


def padding_mask(attention_mask, batch, length, dtype=np.float32):
    """A (B, S) 1/0 mask (1 = attend) as an additive (B, 1, 1, S) bias: 0 or the dtype's min."""
    mask = check_attention_mask(attention_mask, batch, length)
    return additive_mask(mask.astype(bool), dtype)[:, None, None, :]  # (B, S) -> (B, 1, 1, S)


def causal_mask(T, S, dtype=np.float32):
    """(T, S) additive bias letting query t see keys up to S - T + t (the cached prefix too)."""
    return additive_mask(np.tril(np.ones((T, S), dtype=bool), k=S - T), dtype)


@dataclass(frozen=True)
class PaddingMask:
    """The mask of an encoder's self-attention, described instead of written out as a bias:
    every query reads every key whose `keep` entry is true. keep: (B, S) 1/0 or bool, 1 = a
    real token (a Hugging Face attention mask), or None for no padding. `attention` turns
    it into the dense bias (`causal_bias(..., causal=False)`, `padding_mask`'s) only where
    no fused kernel runs.
    """

    keep: object = None
    causal = False

    def keys(self, batch, length, xp=np):
        """(B, S) bool on the device of `xp`: which keys may be read at all."""
        if self.keep is None:
            return xp.ones((batch, length), dtype=bool)
        keep = to_numpy(as_array(self.keep)) != 0
        if keep.shape != (batch, length):
            raise ValueError(f"{type(self).__name__}: keep has shape {keep.shape} but "
                             f"attention has {batch} rows of {length} keys: it must be "
                             f"{(batch, length)}")
        return xp.asarray(keep)


@dataclass(frozen=True)
class CausalMask(PaddingMask):
    """The mask of causal self-attention, described instead of written out as a bias.

    Query t, at absolute position S - T + t (after S - T cached keys), reads keys
    0 .. S - T + t whose `keep` entry is true. keep: (B, S) 1/0 or bool, 1 = a real token
    (a Hugging Face attention mask), or None for no padding. `attention` turns it into the
    dense bias (`causal_bias`) only where no fused kernel runs.
    """

    causal = True


def causal_bias(keep, T, S, dtype, causal=True):
    """(B, 1, T, S) additive bias of causal attention over kept keys (B, S): 0 or the min;
    causal=False: (B, 1, 1, S), the kept keys only (an encoder's padding bias)."""
    xp = array_module(keep)
    if T == 1 or not causal:  # decoding: the one query is the last position and may read
        # every kept key (as every query of an encoder does)
        return additive_mask(keep[:, None, None, :], dtype)  # (B, S) -> (B, 1, 1, S)
    allowed = xp.tril(xp.ones((T, S), dtype=bool), k=S - T)  # (T, S)
    allowed = allowed & keep[:, None, None, :]  # (T, S) & (B, 1, 1, S) -> (B, 1, T, S)
    return additive_mask(allowed, dtype)


def positions_from_mask(attention_mask, T):
    """Positions of the last T tokens: (real tokens so far) - 1, 1 at padding (B, S) -> (B, T).

    As Hugging Face's generate computes them: a left-padded prompt then numbers its real
    tokens 0, 1, 2, ... exactly as the prompt alone. Padding gets 1 (any valid row would
    do: padding is masked out as a key, and its own outputs are never used).
    """
    mask = to_numpy(as_array(attention_mask)) != 0
    positions = np.cumsum(mask, axis=-1) - 1  # (B, S)
    return np.where(mask, positions, 1)[:, -T:]  # (B, S) -> (B, T)
