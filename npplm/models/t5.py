"""T5: an encoder-decoder Transformer pre-trained on text-to-text span corruption.

Paper: Raffel, Shazeer, Roberts, Lee, Narang, Matena, Zhou, Li and Liu, "Exploring the
Limits of Transfer Learning with a Unified Text-to-Text Transformer" (JMLR 2020),
arXiv:1910.10683. T5 v1.1 (gated-GELU, untied head) is described in google-research/
text-to-text-transfer-transformer's released_checkpoints.md.
Reference implementation: Hugging Face transformers, `models/t5/modeling_t5.py` (checked
against transformers 5.x with `attn_implementation="eager"`). Every parameter carries the
Hugging Face checkpoint key as its dotted attribute path, so loading is an identity map.

What is different from GPT-2 (the baseline a reader studies first):
  - Two stacks. An encoder reads the input bidirectionally (only padding is masked); a
    decoder, causal like GPT-2, reads the target and attends to the encoder's output
    through an extra cross-attention sublayer in every block (EncDecAttention).
  - No absolute positions at all. Each attention adds a learned scalar per head to every
    score, chosen by the *relative* distance key - query put into one of 32 buckets:
    exact for small distances, log-spaced up to 128, then one last bucket. The encoder's
    buckets tell left from right (bidirectional); the decoder's only look back. The table
    lives in the first block of each stack (`relative_attention_bias`) and its bias is
    reused by every later block of that stack. Cross-attention has no position bias.
  - No 1/sqrt(D) scaling of the scores (the initialisation of q absorbs it).
  - Pre-norm with RMS LayerNorm: x / sqrt(mean(x^2) + 1e-6) * w, no mean, no bias; and no
    biases in any linear layer either. Each stack ends with a final_layer_norm.
  - Feed-forward: ReLU, wo(relu(wi x)) in T5 v1.0; gated GELU in v1.1,
    wo(gelu_tanh(wi_0 x) * wi_1 x). No dropout is applied in v1.1 pre-training; the
    rate is still a config field.
  - One embedding table `shared` for the encoder's and the decoder's inputs. In v1.0 the
    LM head is that table too, and the decoder output is first scaled by d_model^-0.5
    (Mesh TensorFlow's tied-embedding convention). v1.1 unties the head and drops the scale.
  - Query/key/value width H * D (d_kv per head) need not equal d_model (T5-3B, T5-11B).
  - Training: labels are the target ids; the decoder input is the labels shifted right
    with decoder_start_token_id (= pad, 0) in front and -100 replaced by pad.

Decoding (`T5ForConditionalGeneration.generate`): the encoder runs once per input; the
decoder then reads one new token per step over a `T5Cache`. Its self-attention keys and
values grow by one position a step (npplm.generation.KVCache). Cross-attention's keys and
values, W_k h_enc and W_v h_enc in every decoder block, depend on the input alone, so they
are projected once per input rather than once per step, and shared by its beams. The new
query's position bias is the last row of the full (S, S) one: query position = S - 1.
Greedy decoding, sampling and beam search run through npplm.generation.decode, the loop
every family shares; all give transformers' `generate` sequences.

The checkpoint key map: identity, except that
  - `encoder.embed_tokens.weight`, `decoder.embed_tokens.weight` and (tied) `lm_head.weight`
    are all `shared.weight` (one Tensor, saved once);
  - older checkpoints hold a never-used `decoder.block.0.layer.1.EncDecAttention.
    relative_attention_bias.weight`: ignored on load, as Hugging Face does;
  - T5Model ignores `lm_head.weight` of an untied T5ForConditionalGeneration checkpoint.
Note on transformers 5: its T5Config always ties (tie_word_embeddings is forced to True)
and records the v1.0 / v1.1 difference in `scale_decoder_outputs`. We read both keys: a
config naming tie_word_embeddings=false (every published v1.1 checkpoint) gets an untied
head, loaded from `lm_head.weight`; scale_decoder_outputs, when absent, follows the tie.

Glossary of shape letters: B batch, T query length (decoder: target length), S key length
(encoder input length in cross-attention), C model width (d_model), H heads, D head dim
(d_kv), F feed-forward width (d_ff), V vocabulary, L layers, N buckets.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from autograd import Tensor, array_module, as_array, no_grad, relu, to_numpy
from npplm.generation import decode
from npplm.generation.generate import check_options
from npplm.layers import (
    Dropout,
    Embedding,
    Linear,
    Module,
    RMSNorm,
    activation,
    additive_mask,
    attention,
    check_ids,
    cross_entropy,
    int_array,
    merge_heads,
    run_block,
    split_heads,
)
from npplm.models.base import (
    PreTrainedModel,
    check_positive_ints,
    check_probabilities,
    check_scales,
    check_token_ids,
)
from npplm.models.output import ModelOutput

FEED_FORWARD = ("relu", "gated-gelu")


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class T5Config:
    """T5's hyperparameters, named as in Hugging Face's `config.json` (defaults: t5-small)."""

    vocab_size: int = 32128  # V: 32,000 SentencePiece pieces plus 100 sentinels, padded
    d_model: int = 512  # C: the residual stream width
    d_kv: int = 64  # D: per-head query/key/value width (H * D need not be C)
    d_ff: int = 2048  # F: feed-forward width
    num_layers: int = 6  # L: encoder blocks
    num_decoder_layers: int | None = None  # decoder blocks; None: as many as the encoder
    num_heads: int = 8  # H
    relative_attention_num_buckets: int = 32  # N: distance buckets of the position bias
    relative_attention_max_distance: int = 128  # distances beyond this share the last bucket
    dropout_rate: float = 0.1  # on embeddings, sublayer outputs, attention probabilities
    layer_norm_epsilon: float = 1e-6  # inside the RMS norm's square root
    initializer_factor: float = 1.0  # scales every initialisation std (HF's convention)
    feed_forward_proj: str = "relu"  # "relu" (v1.0) or "gated-gelu" (v1.1)
    pad_token_id: int = 0  # padding; also replaces -100 in shifted labels
    eos_token_id: int = 1  # "</s>"
    decoder_start_token_id: int = 0  # the decoder's first input: pad, as in the paper
    tie_word_embeddings: bool = True  # lm_head = shared (v1.0); False in v1.1
    scale_decoder_outputs: bool | None = None  # x * C^-0.5 before the head; None: = tie

    def __post_init__(self):
        # A frozen dataclass sets derived defaults through object.__setattr__, once, here.
        if self.num_decoder_layers is None:
            object.__setattr__(self, "num_decoder_layers", self.num_layers)
        if self.scale_decoder_outputs is None:
            object.__setattr__(self, "scale_decoder_outputs", self.tie_word_embeddings)
        check_positive_ints(self, "vocab_size", "d_model", "d_kv", "d_ff", "num_layers",
                            "num_decoder_layers", "num_heads", "relative_attention_num_buckets",
                            "relative_attention_max_distance")
        if self.relative_attention_num_buckets < 4:
            # The decoder's half of the buckets is split again into exact and log-spaced.
            raise ValueError(f"T5Config.relative_attention_num_buckets="
                             f"{self.relative_attention_num_buckets} must be at least 4")
        check_probabilities(self, "dropout_rate")
        check_scales(self, positive=["layer_norm_epsilon"], non_negative=["initializer_factor"])
        if self.feed_forward_proj not in FEED_FORWARD:
            raise ValueError(f"T5Config.feed_forward_proj={self.feed_forward_proj!r}; "
                             f"implemented: {FEED_FORWARD}")
        check_token_ids(self, "pad_token_id", "eos_token_id", "decoder_start_token_id")

    @property
    def is_gated(self):
        return self.feed_forward_proj.startswith("gated")

    # Presets: the published v1.0 sizes (Raffel et al., section 3.7) and one for tests.
    @classmethod
    def t5_small(cls, **overrides):
        """t5-small: L=6, C=512, H=8, F=2048 (60M parameters)."""
        return cls(**overrides)

    @classmethod
    def t5_base(cls, **overrides):
        """t5-base: L=12, C=768, H=12, F=3072 (220M)."""
        return cls(**{**dict(d_model=768, d_ff=3072, num_layers=12, num_heads=12),
                      **overrides})

    @classmethod
    def t5_large(cls, **overrides):
        """t5-large: L=24, C=1024, H=16, F=4096 (770M; 738M with the head tied)."""
        return cls(**{**dict(d_model=1024, d_ff=4096, num_layers=24, num_heads=16),
                      **overrides})

    @classmethod
    def t5_3b(cls, **overrides):
        """t5-3B: L=24, C=1024, H=32 heads of D=128 (H D = 4096 > C), F=16384."""
        return cls(**{**dict(d_model=1024, d_kv=128, d_ff=16384, num_layers=24,
                             num_heads=32), **overrides})

    @classmethod
    def t5_11b(cls, **overrides):
        """t5-11B: L=24, C=1024, H=128 heads of D=128 (H D = 16384), F=65536."""
        return cls(**{**dict(d_model=1024, d_kv=128, d_ff=65536, num_layers=24,
                             num_heads=128), **overrides})

    @classmethod
    def tiny(cls, **overrides):
        """A few thousand parameters for tests: H D = 4 * 6 = 24 differs from C = 32 and
        F = 37, the decoder has one more block than the encoder, so that a mixed-up axis
        or stack fails loudly; 8 buckets up to distance 12 so that short inputs reach the
        log-spaced and the last buckets."""
        return cls(**{**dict(vocab_size=64, d_model=32, d_kv=6, d_ff=37, num_layers=2,
                             num_decoder_layers=3, num_heads=4,
                             relative_attention_num_buckets=8,
                             relative_attention_max_distance=12), **overrides})

    # Hugging Face's config.json in and out.
    @classmethod
    def from_hf(cls, hf):
        """From a Hugging Face config dict; keys T5 does not use are ignored. Refuses another
        model_type and feed-forward variants this file does not implement."""
        if hf.get("model_type", "t5") != "t5":
            raise ValueError(f"T5Config.from_hf: model_type {hf['model_type']!r} is not t5")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in names}
        if isinstance(kwargs.get("eos_token_id"), list):
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        if kwargs.get("decoder_start_token_id") is None:
            kwargs["decoder_start_token_id"] = kwargs.get("pad_token_id", 0)
        return cls(**kwargs)

    def to_hf(self):
        """A Hugging Face config dict (model_type "t5"), loadable by transformers."""
        hf = dataclasses.asdict(self)
        hf.update(model_type="t5", is_encoder_decoder=True)
        return hf


def num_parameters(config, with_lm_head=True):
    """Parameters of T5ForConditionalGeneration (T5Model: with_lm_head=False), from the
    config alone; nothing allocated. No linear layer has a bias.

    Shared embedding V C. Attention (q, k, v, o): 4 C H D. Feed-forward: 2 C F (ReLU) or
    3 C F (gated). RMS norm gains: C each, two per encoder block, three per decoder block,
    one final per stack. Relative bias N H, once per stack. Untied head: V C.

        t5_small()   60,506,624     t5_base()   222,903,552    t5_large()   737,668,096
        t5_3b()   2,851,598,336     t5_11b() 11,307,321,344    (v1.0: the head is tied)
    """
    C, F, HD = config.d_model, config.d_ff, config.num_heads * config.d_kv
    attn = 4 * C * HD
    ff = (3 if config.is_gated else 2) * C * F
    bias = config.relative_attention_num_buckets * config.num_heads
    encoder = config.num_layers * (attn + ff + 2 * C) + bias + C
    decoder = config.num_decoder_layers * (2 * attn + ff + 3 * C) + bias + C
    head = config.vocab_size * C if with_lm_head and not config.tie_word_embeddings else 0
    return config.vocab_size * C + encoder + decoder + head


# --- relative position bias ----------------------------------------------------------------


def relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """Bucket of each relative position (key - query), an integer array of any shape.

    Bidirectional (encoder): half the buckets for keys to the right (> 0), half for the rest,
    by |distance|. Unidirectional (decoder): keys to the right cannot be seen; every
    distance is min(distance, 0) negated. Within a half of n buckets, distances below n/2
    get their own bucket; from n/2 to max_distance the buckets are spaced logarithmically:
        n/2 + floor(log(d / (n/2)) / log(max_distance / (n/2)) * (n - n/2)),
    capped at n - 1. Computed in float32, as the reference does, so that the floor falls
    on the same side at every bucket boundary.
    """
    rp = np.asarray(relative_position)
    buckets = np.zeros(rp.shape, dtype=np.int64)
    if bidirectional:
        num_buckets //= 2
        buckets += (rp > 0).astype(np.int64) * num_buckets
        rp = np.abs(rp)
    else:
        rp = -np.minimum(rp, 0)
    max_exact = num_buckets // 2
    is_small = rp < max_exact
    with np.errstate(divide="ignore"):  # log(0) where rp = 0: a small distance, unused
        scaled = (np.log(rp.astype(np.float32) / np.float32(max_exact))
                  / np.float32(math.log(max_distance / max_exact))
                  * np.float32(num_buckets - max_exact))
    large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, rp, large)


# --- building blocks ------------------------------------------------------------------------


class T5Attention(Module):
    """Adapted from npplm.layers.attention: adds T5's relative position bias, no scaling.

    softmax(q k^T + position_bias + mask) v over H heads of width D, projections without
    biases. Queries come from the sublayer's input x; keys and values from x itself
    (self-attention) or from the encoder output (cross-attention), projected by
    `keys_values` apart from `forward`, so that cached decoding can keep them. Only the
    first block of a stack owns `relative_attention_bias`, an (N, H) table;
    `compute_bias` turns it into (1, H, T, S).
    """

    def __init__(self, config, rng, has_relative_attention_bias, bidirectional):
        C, H, D = config.d_model, config.num_heads, config.d_kv
        f = config.initializer_factor
        self.num_heads = H
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        # Hugging Face's initialisation (Mesh TensorFlow's): q absorbs the missing 1/sqrt(D).
        self.q = Linear(C, H * D, bias=False, std=f * (C * D) ** -0.5, rng=rng)
        self.k = Linear(C, H * D, bias=False, std=f * C ** -0.5, rng=rng)
        self.v = Linear(C, H * D, bias=False, std=f * C ** -0.5, rng=rng)
        self.o = Linear(H * D, C, bias=False, std=f * (H * D) ** -0.5, rng=rng)
        if has_relative_attention_bias:
            self.relative_attention_bias = Embedding(self.num_buckets, H, std=f * C ** -0.5,
                                                     rng=rng, what="bucket")
        self.dropout = Dropout(config.dropout_rate, rng)

    def compute_bias(self, T, S):
        """The learned position bias, (1, H, T, S): table[bucket(key - query)].

        The T queries are the last T of the S positions: all of them in the encoder and in
        a full decoder pass (T = S), the newest after S - T cached ones in cached decoding.
        """
        query = np.arange(S - T, S)[:, None]  # (T, 1)
        key = np.arange(S)[None, :]  # (1, S)
        buckets = relative_position_bucket(key - query, self.bidirectional, self.num_buckets,
                                           self.max_distance)  # (T, S)
        values = self.relative_attention_bias(buckets)  # (T, S) -> (T, S, H)
        return values.transpose(2, 0, 1).reshape(1, self.num_heads, T, S)  # -> (1, H, T, S)

    def keys_values(self, states):
        """The keys and values of the states attended to: (B, S, C) -> 2 x (B, H, S, D)."""
        k = split_heads(self.k(states), self.num_heads)  # (B, S, C) -> (B, S, H D) -> (B, H, S, D)
        v = split_heads(self.v(states), self.num_heads)  # (B, S, C) -> (B, H, S, D)
        return k, v

    def forward(self, x, k, v, bias):
        q = split_heads(self.q(x), self.num_heads)  # (B, T, C) -> (B, T, H D) -> (B, H, T, D)
        y = attention(q, k, v, bias=bias, scale=1.0, dropout=self.dropout)  # (B, H, T, D)
        return self.o(merge_heads(y))  # (B, H, T, D) -> (B, T, H D) -> (B, T, C)


class T5LayerSelfAttention(Module):
    """Pre-norm residual sublayer: x + dropout(SelfAttention(RMSNorm(x)))."""

    def __init__(self, config, rng, has_relative_attention_bias, bidirectional):
        self.SelfAttention = T5Attention(config, rng, has_relative_attention_bias,
                                         bidirectional)
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate, rng)

    def forward(self, x, bias, cache=None, layer=0):
        h = self.layer_norm(x)
        k, v = self.SelfAttention.keys_values(h)  # (B, H, T, D) each
        if cache is not None:
            # Cached decoding: this call's keys and values join those of the earlier tokens
            # (raw arrays: decoding runs under no_grad) -> (B, H, S, D) each.
            k, v = (Tensor(a) for a in cache.self_attention.update(layer, k, v))
        return x + self.dropout(self.SelfAttention(h, k, v, bias))


class T5LayerCrossAttention(Module):
    """x + dropout(EncDecAttention(RMSNorm(x), encoder output)): queries from the decoder,
    keys and values from the (already normalised) encoder output; no position bias."""

    def __init__(self, config, rng):
        self.EncDecAttention = T5Attention(config, rng, False, bidirectional=True)
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate, rng)

    def forward(self, x, k, v, bias, cache=None, layer=0):
        """k, v (B, H, S, D): this block's projections of the encoder output, made once
        per input sequence by T5Stack (or, decoding, when the cache was made)."""
        if cache is not None:
            k, v = (Tensor(a) for a in cache.cross_attention[layer])
        return x + self.dropout(self.EncDecAttention(self.layer_norm(x), k, v, bias))


class T5DenseActDense(Module):
    """v1.0: wo(dropout(relu(wi x))), (B, T, C) -> (B, T, F) -> (B, T, C)."""

    def __init__(self, config, rng):
        C, F, f = config.d_model, config.d_ff, config.initializer_factor
        self.wi = Linear(C, F, bias=False, std=f * C ** -0.5, rng=rng)
        self.wo = Linear(F, C, bias=False, std=f * F ** -0.5, rng=rng)
        self.dropout = Dropout(config.dropout_rate, rng)

    def forward(self, x):
        return self.wo(self.dropout(relu(self.wi(x))))


class T5DenseGatedActDense(Module):
    """v1.1: wo(dropout(gelu_tanh(wi_0 x) * wi_1 x)), a GEGLU (Shazeer, 2020, 2002.05202)."""

    def __init__(self, config, rng):
        C, F, f = config.d_model, config.d_ff, config.initializer_factor
        self.wi_0 = Linear(C, F, bias=False, std=f * C ** -0.5, rng=rng)
        self.wi_1 = Linear(C, F, bias=False, std=f * C ** -0.5, rng=rng)
        self.wo = Linear(F, C, bias=False, std=f * F ** -0.5, rng=rng)
        self.act = activation("gelu_new")  # Hugging Face's name for the tanh approximation
        self.dropout = Dropout(config.dropout_rate, rng)

    def forward(self, x):
        return self.wo(self.dropout(self.act(self.wi_0(x)) * self.wi_1(x)))  # (B, T, C)


class T5LayerFF(Module):
    """x + dropout(DenseReluDense(RMSNorm(x))); the attribute keeps its v1.0 name in v1.1."""

    def __init__(self, config, rng):
        dense = T5DenseGatedActDense if config.is_gated else T5DenseActDense
        self.DenseReluDense = dense(config, rng)
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate, rng)

    def forward(self, x):
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class T5Block(Module):
    """One block; its sublayers in a list, keys `layer.0`, `layer.1` (and `layer.2`):
        encoder: self-attention, feed-forward
        decoder: causal self-attention, cross-attention, feed-forward
    """

    def __init__(self, config, rng, is_decoder, has_relative_attention_bias):
        self.layer = [T5LayerSelfAttention(config, rng, has_relative_attention_bias,
                                           bidirectional=not is_decoder)]
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(config, rng))
        self.layer.append(T5LayerFF(config, rng))

    def forward(self, x, bias, cross_k=None, cross_v=None, cross_bias=None, cache=None,
                layer=0):
        x = self.layer[0](x, bias, cache, layer)
        if len(self.layer) == 3:  # a decoder block: cross-attention on the encoder output
            x = self.layer[1](x, cross_k, cross_v, cross_bias, cache, layer)
        return self.layer[-1](x)


class T5Stack(Module):
    """Embedding (shared), dropout, L blocks, final RMS norm, dropout.

    The first block computes the position bias from its table; every block adds that same
    (1, H, T, S) bias plus the mask. Gradients from all blocks flow into the one table.
    With a cache (decoder only) the T new tokens follow cache.length cached ones: keys
    and the position bias span all S = cache.length + T positions.
    """

    def __init__(self, config, embed_tokens, rng, is_decoder):
        self.embed_tokens = embed_tokens  # the model's `shared` Embedding: one Tensor
        self.is_decoder = is_decoder
        n = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = [T5Block(config, rng, is_decoder, has_relative_attention_bias=i == 0)
                      for i in range(n)]
        self.final_layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate, rng)

    def forward(self, input_ids, mask_bias, encoder_states=None, cross_bias=None, cache=None):
        T = input_ids.shape[1]
        S = T if cache is None else cache.length + T  # key positions: cached, then these
        x = self.dropout(self.embed_tokens(input_ids))  # (B, T) -> (B, T, C)
        position = self.block[0].layer[0].SelfAttention.compute_bias(T, S)  # (1, H, T, S)
        mask_bias = array_module(position.data).asarray(mask_bias)  # host mask -> device
        bias = position + Tensor(mask_bias)  # + (B, 1, T, S) or (B, 1, 1, S)
        # Every decoder block's keys and values of the encoder output, projected once per
        # input sequence, before the blocks (decoding takes them from the cache instead).
        # Outside the blocks, the encoder output's gradient adds up in the same order with
        # or without activation checkpointing.
        cross = [(None, None)] * len(self.block)
        if self.is_decoder and cache is None:
            cross = [block.layer[1].EncDecAttention.keys_values(encoder_states)
                     for block in self.block]  # (B, H, S, D) each
        for i, block in enumerate(self.block):
            x = run_block(self, block, x, bias, *cross[i], cross_bias, cache, i)
        if cache is not None:
            cache.self_attention.advance(T)
        return self.dropout(self.final_layer_norm(x))


# --- the models ----------------------------------------------------------------------------


def _int_ids(x, name, vocab_size):
    """A (B, T) integer array from an array, a Tensor or a list, ids checked against V."""
    x = int_array(x, name)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (B, T) with T >= 1, got {x.shape}")
    if vocab_size is not None:
        check_ids(x, vocab_size, what=f"{name}: token id")
    return x


def _mask(mask, shape, name):
    """A (B, T) 0/1 mask as a boolean NumPy array, checked against the ids' shape."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = to_numpy(as_array(mask))
    if mask.shape != tuple(shape):
        raise ValueError(f"{name} has shape {mask.shape} but its ids have {tuple(shape)}: "
                         "they must be equal")
    return mask.astype(bool)


def shift_right(labels, decoder_start_token_id, pad_token_id):
    """Teacher forcing's decoder input: [start, y_0, ..., y_{T-2}], -100 replaced by pad."""
    xp = array_module(labels)
    shifted = xp.empty_like(labels)
    shifted[:, 1:] = labels[:, :-1]  # (B, T): each position sees the previous target
    shifted[:, 0] = decoder_start_token_id
    return xp.where(shifted == -100, pad_token_id, shifted)


class T5Cache:
    """What cached decoding keeps between steps, for R = B x num_beams decoder rows.

        self_attention   a KVCache: every decoder block's keys and values of the tokens
                         decoded so far, (R, H, length, D) each, one position more a step
        cross_attention  per decoder block, (k, v) of the encoder output, (R, H, S, D)
                         each. They depend on the input sequence only, never on the tokens
                         decoded, so they are projected once per sequence (on its B rows,
                         then repeated for its beams) instead of once per step
        cross_bias       (R, 1, 1, S) the encoder input's padding, as an additive bias
        encoder_last_hidden_state  (B, S, C) the encoder output, kept for inspection
    Row b num_beams + j is beam j of input b. Made by `T5Model.prefill`.
    """

    def __init__(self, self_attention, cross_attention, cross_bias, encoder_last_hidden_state,
                 num_beams):
        self.self_attention = self_attention
        self.cross_attention = cross_attention
        self.cross_bias = cross_bias
        self.encoder_last_hidden_state = encoder_last_hidden_state
        self.num_beams = num_beams

    @property
    def length(self):
        """Decoder positions cached so far."""
        return self.self_attention.length

    @property
    def rows(self):
        return self.cross_bias.shape[0]  # R

    def reorder(self, rows):
        """Row i continues the sequence of row rows[i] (beam search). Only the decoder's own
        keys and values move: every beam of an input shares its cross-attention keys and
        values, and a beam only ever continues a beam of the same input."""
        rows = np.asarray(rows)
        beam_input = np.arange(self.rows) // self.num_beams
        if rows.shape != (self.rows,) or (rows // self.num_beams != beam_input).any():
            raise ValueError(f"T5Cache.reorder: rows must give each of the {self.rows} rows a "
                             f"row of the same input (num_beams={self.num_beams}), got {rows}")
        self.self_attention.reorder(rows)


def _new_token_count(max_new_tokens, max_length):
    """How many tokens generate() may add, as transformers 5 counts them for T5.

    max_length counts the decoder's whole output, the start token included, so it allows
    max_length - 1 new tokens; with neither limit given, 20 new tokens (transformers'
    default). Giving both is refused here (transformers lets max_new_tokens win, with a
    warning).
    """
    if max_new_tokens is not None and max_length is not None:
        raise ValueError(f"give max_new_tokens={max_new_tokens} or max_length={max_length}, "
                         "not both")
    if max_length is not None:
        if not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise ValueError(f"max_length={max_length!r} must be a positive integer (it "
                             "counts the decoder start token)")
        return int(max_length) - 1
    max_new_tokens = 20 if max_new_tokens is None else max_new_tokens
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a non-negative integer")
    return int(max_new_tokens)


class T5PreTrainedModel(PreTrainedModel):
    """What every T5 class shares: its config class and the keys ignored on load."""

    config_class = T5Config
    base_model_prefix = ""  # T5Model and T5ForConditionalGeneration share every key
    ignore_on_load = (r"^decoder\.block\.0\.layer\.1\.EncDecAttention\."
                      r"relative_attention_bias\.",)

    def kv_cache_layout(self):
        """(L, H, D) of the decoder's self-attention cache (cross-attention's is T5Cache's)."""
        c = self.config
        return c.num_decoder_layers, c.num_heads, c.d_kv


class T5Model(T5PreTrainedModel):
    """The encoder-decoder without a head: the decoder's last hidden state (B, T, C).

    forward(input_ids=None, attention_mask=None, decoder_input_ids=None,
            decoder_attention_mask=None, cache=None):
        input_ids               (B, S) encoder input, integers in [0, V)
        attention_mask          (B, S) 1 for tokens, 0 for padding; None: all tokens
        decoder_input_ids       (B, T) the decoder input: all of it (full recompute), or
                                with a cache only the tokens that follow the cached ones
        decoder_attention_mask  (B, T) padding of the decoder input, on top of causality;
                                with a cache (B, cache.length + T), the cached tokens too
        cache                   a T5Cache (`prefill`): the encoder has already run, so
                                input_ids and attention_mask are not given; the new tokens'
                                keys and values are appended to it
    Weights are drawn from `seed` as Hugging Face initialises them (see T5Attention).
    """

    ignore_on_load = (*T5PreTrainedModel.ignore_on_load, r"^lm_head\.")

    def __init__(self, config, seed=0, rng=None):
        rng = np.random.default_rng(seed) if rng is None else rng
        self.config = config
        self.shared = Embedding(config.vocab_size, config.d_model,
                                std=config.initializer_factor, rng=rng)
        self.encoder = T5Stack(config, self.shared, rng, is_decoder=False)
        self.decoder = T5Stack(config, self.shared, rng, is_decoder=True)

    @property
    def dtype(self):
        return self.shared.weight.dtype

    def encode(self, input_ids, attention_mask=None):
        """Encoder output (B, S, C) and the (B, 1, 1, S) padding bias for cross-attention."""
        input_ids = _int_ids(input_ids, "input_ids", self.config.vocab_size)
        allowed = _mask(attention_mask, input_ids.shape, "attention_mask")  # (B, S)
        pad = additive_mask(allowed[:, None, None, :], self.dtype)  # (B, S) -> (B, 1, 1, S)
        return self.encoder(input_ids, pad), pad

    def prefill(self, input_ids, attention_mask=None, max_length=64, num_beams=1,
                kv_cache_dtype=None):
        """Run the encoder once; return a T5Cache for decoding up to max_length positions,
        with num_beams rows per input, its self-attention cache stored as kv_cache_dtype
        says (new_cache). Call under no_grad (the cache holds raw arrays)."""
        if not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
            raise ValueError(f"num_beams={num_beams!r} must be a positive integer")
        encoder_states, pad = self.encode(input_ids, attention_mask)  # (B, S, C), (B,1,1,S)
        xp = array_module(encoder_states.data)
        cross = []
        for block in self.decoder.block:
            k, v = block.layer[1].EncDecAttention.keys_values(encoder_states)  # (B, H, S, D)
            # (B, H, S, D) -> (B num_beams, H, S, D): each input's row once per beam
            cross.append((xp.repeat(k.data, num_beams, axis=0),
                          xp.repeat(v.data, num_beams, axis=0)))
        self_attention = self.new_cache(encoder_states.shape[0] * num_beams, max_length,
                                        dtype=kv_cache_dtype)
        cross_bias = xp.asarray(np.repeat(pad, num_beams, axis=0))  # (B num_beams, 1, 1, S)
        return T5Cache(self_attention, cross, cross_bias, encoder_states, num_beams)

    def decode(self, decoder_input_ids, encoder_states=None, cross_bias=None,
               decoder_attention_mask=None, cache=None):
        """Decoder output (B, T, C): causal self-attention, cross-attention on the encoder
        (its output and padding bias, or a cache holding their projections)."""
        ids = _int_ids(decoder_input_ids, "decoder_input_ids", self.config.vocab_size)
        B, T = ids.shape
        past = 0 if cache is None else cache.length
        rows = encoder_states.shape[0] if cache is None else cache.rows
        if B != rows:
            raise ValueError(f"decoder_input_ids has batch {B} but "
                             + (f"input_ids has {rows}" if cache is None
                                else f"the cache has {rows} rows"))
        if cache is not None:
            cross_bias = cache.cross_bias
        S = past + T
        causal = np.tril(np.ones((T, S), dtype=bool), k=past)  # query t sees keys <= past+t
        pad = _mask(decoder_attention_mask, (B, S), "decoder_attention_mask")  # (B, S)
        allowed = causal[None, None] & pad[:, None, None, :]  # -> (B, 1, T, S)
        return self.decoder(ids, additive_mask(allowed, self.dtype), encoder_states,
                            cross_bias, cache)

    def _run(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
             cache):
        """(decoder output (B, T, C), encoder output (B, S, C)): encode unless cached."""
        if cache is None:
            if input_ids is None:
                raise ValueError(f"{type(self).__name__} needs input_ids (or a cache)")
            encoder_states, cross_bias = self.encode(input_ids, attention_mask)
        else:
            if input_ids is not None or attention_mask is not None:
                raise ValueError("with a cache the encoder has already run: give only "
                                 "decoder_input_ids (and decoder_attention_mask)")
            encoder_states, cross_bias = cache.encoder_last_hidden_state, None
        h = self.decode(decoder_input_ids, encoder_states, cross_bias, decoder_attention_mask,
                        cache)
        return h, encoder_states

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None,
                decoder_attention_mask=None, cache=None):
        if decoder_input_ids is None:
            raise ValueError("T5Model needs decoder_input_ids (the decoder's whole input)")
        h, encoder_states = self._run(input_ids, attention_mask, decoder_input_ids,
                                      decoder_attention_mask, cache)
        return ModelOutput(last_hidden_state=h, encoder_last_hidden_state=encoder_states)


class T5ForConditionalGeneration(T5Model):
    """Text to text: logits (B, T, V) over the next target token at every decoder position.

    forward(input_ids=None, attention_mask=None, decoder_input_ids=None,
            decoder_attention_mask=None, labels=None, cache=None):
        labels  (B, T) target ids in [0, V), -100 where ignored. Without decoder_input_ids,
                the decoder input is labels shifted right (shift_right). loss = mean
                cross-entropy of logits against labels over labels != -100 (no further
                shift: position t already predicts labels[t]).
        the other arguments as T5Model's.
    generate(input_ids, ...) decodes: greedy, sampling or beam search (see there).
    A subclass of T5Model: the same keys (shared, encoder, decoder; no backbone prefix), plus
    lm_head.
    """

    ignore_on_load = T5PreTrainedModel.ignore_on_load

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        super().__init__(config, rng=rng)
        if config.tie_word_embeddings:
            self.lm_head = Linear.tied(self.shared.weight)  # the (V, C) shared table
        else:
            self.lm_head = Linear(config.d_model, config.vocab_size, bias=False,
                                  std=config.initializer_factor, rng=rng)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None,
                decoder_attention_mask=None, labels=None, cache=None):
        config = self.config
        if labels is not None:
            labels = int_array(labels, "labels")
            if labels.ndim != 2:
                raise ValueError(f"labels must have shape (B, T), got {labels.shape}")
            check_ids(labels[labels != -100], config.vocab_size, what="labels: token id")
            if cache is not None:
                raise ValueError("labels train on whole targets; a cache decodes step by step "
                                 "(give decoder_input_ids)")
            if decoder_input_ids is None:
                decoder_input_ids = shift_right(labels, config.decoder_start_token_id,
                                                config.pad_token_id)
        if decoder_input_ids is None:
            raise ValueError("T5ForConditionalGeneration needs decoder_input_ids or labels")
        h, encoder_states = self._run(input_ids, attention_mask, decoder_input_ids,
                                      decoder_attention_mask, cache)  # (B, T, C)
        if config.scale_decoder_outputs:
            h = h * (config.d_model ** -0.5)  # v1.0: the tied table is used at unit scale
        logits = self.lm_head(h)  # (B, T, C) -> (B, T, V)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels has shape {labels.shape} but decoder_input_ids has "
                                 f"{logits.shape[:2]}: they must be equal")
            loss = cross_entropy(logits, labels)
        return ModelOutput(loss=loss, logits=logits, encoder_last_hidden_state=encoder_states)

    def generate(self, input_ids, attention_mask=None, max_new_tokens=None, max_length=None,
                 num_beams=1, temperature=0.0, top_k=None, top_p=None, seed=None,
                 length_penalty=1.0, early_stopping=False, num_return_sequences=1,
                 eos_token_id=None, pad_token_id=None, decoder_start_token_id=None,
                 stream=None, kv_cache_dtype=None):
        """Write the output text of each input: (B, 1 + n) int64, the start token first.

        The encoder reads input_ids (B, S) (or (S,) for one input; attention_mask (B, S)
        marks padding, on either side) once; the decoder starts from
        decoder_start_token_id and writes up to n tokens: n = max_new_tokens (default 20),
        or max_length - 1 (max_length counts the start token), as transformers' generate.
        Each step feeds the decoder only the newest token, over a T5Cache.

        num_beams=1       temperature=0 (the default): greedy; temperature > 0: sampling from
                          softmax(logits / temperature), restricted by top_k / top_p, drawn
                          from `seed` (npplm.generation.choose_next). A row that emits
                          eos_token_id gets pad_token_id after it; decoding stops once every
                          row has (npplm.generation.stream_tokens).
        num_beams=N > 1   beam search (npplm.generation.beam_search): length_penalty,
                          early_stopping (True, False or "never") as transformers;
                          num_return_sequences <= N best hypotheses per input, B r rows,
                          each input's best first. Beam search is deterministic:
                          temperature must stay 0.
        eos_token_id, pad_token_id, decoder_start_token_id: None takes the config's.
        stream            called with each step's (B,) tokens as they come (num_beams=1).
        kv_cache_dtype    what the decoder's self-attention cache stores: None (the weights'
                          dtype), "float16", "float32" or "int8" (new_cache); the
                          cross-attention keys and values stay in the weights' dtype.
        The model is run under no_grad; call .eval() first if it was training (dropout).
        """
        config = self.config
        ids = as_array(input_ids)
        ids = ids if hasattr(ids, "dtype") else np.asarray(ids)
        ids = ids[None, :] if ids.ndim == 1 else ids  # one input (S,) -> (1, S)
        if attention_mask is not None:
            attention_mask = to_numpy(as_array(attention_mask))
            attention_mask = attention_mask[None] if attention_mask.ndim == 1 else attention_mask
        n = _new_token_count(max_new_tokens, max_length)
        special = {}
        for name, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id),
                            ("decoder_start_token_id", decoder_start_token_id)):
            value = getattr(config, name) if value is None else value
            if not isinstance(value, (int, np.integer)) or not 0 <= value < config.vocab_size:
                raise ValueError(f"{name}={value!r} is outside the vocabulary "
                                 f"(vocab_size={config.vocab_size})")
            special[name] = int(value)
        check_options(n, num_beams, temperature, num_return_sequences, top_k, top_p)
        start = special["decoder_start_token_id"]
        with no_grad():
            cache = self.prefill(ids, attention_mask, max_length=max(n, 1), num_beams=num_beams,
                                 kv_cache_dtype=kv_cache_dtype)
            R = cache.rows  # B x num_beams

            def step(tokens, rows=None):
                """Logits (R, V) of the next token, once `tokens` (R,) are appended."""
                if rows is not None:
                    cache.reorder(rows)
                column = np.full((R, 1), start) if tokens is None else tokens[:, None]
                return to_numpy(self(decoder_input_ids=column, cache=cache).logits.data[:, -1])

            new = decode(step, ids.shape[0], n, num_beams=num_beams, temperature=temperature,
                         top_k=top_k, top_p=top_p, eos_token_id=special["eos_token_id"],
                         pad_token_id=special["pad_token_id"], seed=seed,
                         length_penalty=length_penalty, early_stopping=early_stopping,
                         num_return_sequences=num_return_sequences, stream=stream)  # (B r, n)
        starts = np.full((new.shape[0], 1), start, dtype=np.int64)
        return np.concatenate([starts, new], axis=1)  # (B r, 1 + n)
