"""GPT-1, GPT-2 and GPT-3: decoder-only Transformers pre-trained to predict the next token.

GPT-2 is the baseline every other family file compares itself with, so read this one first.

Papers:
  GPT-1  Radford, Narasimhan, Salimans and Sutskever, "Improving Language Understanding by
         Generative Pre-Training" (OpenAI, 2018; no arXiv id).
  GPT-2  Radford, Wu, Child, Luan, Amodei and Sutskever, "Language Models are Unsupervised
         Multitask Learners" (OpenAI, 2019; no arXiv id).
  GPT-3  Brown et al., "Language Models are Few-Shot Learners" (NeurIPS 2020),
         arXiv:2005.14165; its sparse layers follow Child et al., "Generating Long Sequences
         with Sparse Transformers", arXiv:1904.10509.
Reference implementation: Hugging Face transformers, `models/gpt2/modeling_gpt2.py` and
`models/openai/modeling_openai.py` (checked against transformers 5.x with
`attn_implementation="eager"`), which load OpenAI's released checkpoints (openai/gpt-2 on
GitHub for GPT-2). GPT-3's weights were never released: no reference exists for its sparse
layers, so they are tested by the properties of their mask (tests/models/test_gpt.py).

The model (GPT-2), for ids (B, T):
    h = wte[ids] + wpe[positions]                        (B, T, C)
    repeat L times:
        h = h + Attention(LN_1(h))     causal: token t sees tokens 0..t only
        h = h + MLP(LN_2(h))           MLP(x) = W_2 GELU(W_1 x), F = 4 C
    logits = LN_f(h) @ wte^T                             (B, T, V), the table is tied
Training minimises the cross-entropy of token t+1 given tokens 0..t, every t at once.

The three generations, as differences from GPT-2:
  - GPT-1: post-LN blocks, h = LN_1(h + Attention(h)); h = LN_2(h + MLP(h)), as in the
    original Transformer (and BERT), and no final LayerNorm. A 40,478-token BPE vocabulary,
    512 positions. Its keys lack the `transformer.` in-between names: tokens_embed,
    positions_embed, h.N.* (Hugging Face's OpenAIGPTModel).
  - GPT-2: pre-LN (LayerNorm before each sublayer, Xiong et al. arXiv:2002.04745 explain why
    this trains more stably), a final ln_f, residual projections initialised with std
    0.02 / sqrt(2 L) "to account for the accumulation on the residual path" (section 2.3),
    a byte-level BPE of 50,257 tokens and 1,024 positions.
  - GPT-3: GPT-2's blocks at up to 96 layers and 2,048 positions, with "alternating dense
    and locally banded sparse attention patterns in the layers of the transformer, similar
    to the Sparse Transformer" (section 2.1). The paper does not give the band's width;
    `local_window` defaults to 256 (GPT-Neo's choice, the closest public replication).
    A banded layer here is GPT-Neo's "local" attention and the Sparse Transformer's band:
    each token sees itself and the window - 1 tokens before it (`band`). The paper also
    leaves open which layers are dense (we take dense first, as GPT-Neo: dense, banded,
    dense, ...) and whether the band was block-aligned, as the Sparse Transformer's
    block-sparse kernels compute it, or slides token by token, as here.

Checkpoint layout. OpenAI wrote GPT-1/2 with 1x1 "Conv1D" layers, whose weights are stored
(in, out); our Linear, like torch.nn.Linear, stores (out, in) and computes x W^T + b. The
parameters keep the checkpoint key names, and the four Conv1D weights of every block
(`CONV1D_WEIGHTS`) are transposed when loading and again when saving; nothing else is.
The causal-mask buffers of older GPT-2 checkpoints (`h.N.attn.bias`, `h.N.attn.masked_bias`)
are ignored on load, and `lm_head.weight` is the token table (tied, saved once).

Positions. Hugging Face's bare forward numbers the T tokens 0..T-1 (after any cached ones)
whatever the attention mask says. We number them as its `generate` does: position =
(number of real tokens up to and including this one) - 1, so that a left-padded prompt
gets the same positions, hence the same logits, as the prompt alone. For unpadded or
right-padded input the two agree on every real token; pass `position_ids` to override.

Sequence classification. GPT2ForSequenceClassification reads the backbone out at each
row's last token that is not padding and scores it with a bias-free linear layer
`score` (num_labels, C), as Hugging Face's; with num_labels = 1 it is the reward model of
RLHF. Its pieces (last_token_positions, SequenceClassifierMixin, num_labels in config.json)
serve llama.py's classifier too.

Glossary of shape letters: B batch, T query length (new tokens), S key length (cached +
new), C model width (n_embd), H heads, D head dim (C / H), F feed-forward width (n_inner),
V vocabulary, L layers.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from autograd import Tensor, as_array, split, to_numpy
from npplm.generation import GenerationMixin
from npplm.layers import (
    CausalMask,
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    activation,
    additive_mask,
    attention,
    causal_lm_loss,
    gelu_tanh,
    int_array,
    merge_heads,
    positions_from_mask,
    run_block,
    split_heads,
)
from npplm.models.base import (
    PreTrainedModel,
    SequenceClassifierMixin,
    check_divides,
    check_optional_positive_int,
    check_positive_ints,
    check_probabilities,
    check_scales,
    check_token_ids,
    num_labels_from_hf,
    num_labels_to_hf,
)
from npplm.models.output import ModelOutput

MODEL_TYPES = ("openai-gpt", "gpt2")
ATTENTION_KINDS = ("global", "local")  # dense causal, or causal within a band of local_window

# Conv1D weights, stored (in, out) in checkpoints and (out, in) here: transposed on load/save.
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                  "mlp.c_proj.weight")


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class GPTConfig:
    """GPT-1/2/3 hyperparameters, named as in Hugging Face's GPT-2 `config.json`.

    Defaults: GPT-2 small (124M). `model_type` picks the block: "openai-gpt" (GPT-1,
    post-LN, no final LayerNorm) or "gpt2" (GPT-2 and GPT-3, pre-LN with ln_f).
    """

    model_type: str = "gpt2"  # "openai-gpt" (GPT-1) or "gpt2" (GPT-2, GPT-3)
    vocab_size: int = 50257  # V: GPT-2's byte-level BPE (GPT-1: 40478)
    n_positions: int = 1024  # rows of the learned position table: the longest context
    n_embd: int = 768  # C: the residual stream width
    n_layer: int = 12  # L: decoder blocks
    n_head: int = 12  # H; each head has D = C / H dimensions
    n_inner: int | None = None  # F: feed-forward width; None: 4 C (every published size)
    activation_function: str = "gelu_new"  # GELU, tanh approximation (GPT-1's "gelu" too)
    resid_pdrop: float = 0.1  # dropout after each sublayer, before the residual addition
    embd_pdrop: float = 0.1  # dropout on the summed embeddings
    attn_pdrop: float = 0.1  # dropout on the attention probabilities
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02  # std of the normal initialisation
    bos_token_id: int | None = 50256  # <|endoftext|> starts and ends documents in GPT-2
    eos_token_id: int | None = 50256
    # The sequence classifier (a reward model) scores each row's last token that is not
    # pad_token_id. GPT-2 has no padding token of its own: None, as in its config.json.
    pad_token_id: int | None = None
    num_labels: int = 2  # outputs of GPT2ForSequenceClassification; 1 for a reward model
    tie_word_embeddings: bool = True  # lm_head = wte (False: not implemented)
    # GPT-3's sparse layers: one entry per layer, "global" (dense) or "local" (banded).
    # None: every layer dense (GPT-1, GPT-2).
    attention_layers: tuple[str, ...] | None = None
    local_window: int = 256  # a "local" layer's query sees itself and the window-1 before it

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"GPTConfig.model_type={self.model_type!r}; use one of "
                             f"{MODEL_TYPES}")
        check_positive_ints(self, "vocab_size", "n_positions", "n_embd", "n_layer", "n_head",
                            "local_window", "num_labels")
        check_token_ids(self, "pad_token_id", optional=True)
        check_optional_positive_int(self, "n_inner")
        check_divides(self, "n_embd", "n_head")
        check_probabilities(self, "resid_pdrop", "embd_pdrop", "attn_pdrop")
        check_scales(self, positive=["layer_norm_epsilon"], non_negative=["initializer_range"])
        activation(self.activation_function)  # raises ValueError naming the known ones
        if not self.tie_word_embeddings:
            raise ValueError("GPTConfig: tie_word_embeddings=False is not implemented: every "
                             "published GPT ties lm_head to the token table")
        if self.attention_layers is not None:
            if self.model_type != "gpt2":
                raise ValueError("GPTConfig: attention_layers (GPT-3's sparse layers) needs "
                                 "model_type='gpt2'")
            if len(self.attention_layers) != self.n_layer:
                raise ValueError(f"GPTConfig: attention_layers has {len(self.attention_layers)}"
                                 f" entries but n_layer={self.n_layer}")
            bad = [k for k in self.attention_layers if k not in ATTENTION_KINDS]
            if bad:
                raise ValueError(f"GPTConfig: attention_layers holds {bad[0]!r}; use "
                                 f"{ATTENTION_KINDS}")

    @property
    def head_dim(self):
        return self.n_embd // self.n_head  # D

    @property
    def inner_dim(self):
        return 4 * self.n_embd if self.n_inner is None else self.n_inner  # F

    def layer_kinds(self):
        """("global" | "local",) * L: which attention each layer uses."""
        return self.attention_layers or ("global",) * self.n_layer

    # Presets: published sizes. GPT-2: table 2 of the paper (its parameter counts, 117M and
    # 345M for the two smaller models, were later corrected by OpenAI to 124M and 355M).
    # GPT-3: table 2.1. Exact counts are in `num_parameters`.
    @classmethod
    def gpt1(cls, **overrides):
        """GPT-1: L=12, C=768, H=12, 512 positions, 40,478-token vocabulary (117M)."""
        return cls(**{**dict(model_type="openai-gpt", vocab_size=40478, n_positions=512,
                             activation_function="gelu", bos_token_id=None,
                             eos_token_id=None), **overrides})

    @classmethod
    def gpt2(cls, **overrides):
        """GPT-2 small: L=12, C=768, H=12 (124M)."""
        return cls(**overrides)

    @classmethod
    def gpt2_medium(cls, **overrides):
        """GPT-2 medium: L=24, C=1024, H=16 (355M)."""
        return cls(**{**dict(n_embd=1024, n_layer=24, n_head=16), **overrides})

    @classmethod
    def gpt2_large(cls, **overrides):
        """GPT-2 large: L=36, C=1280, H=20 (774M)."""
        return cls(**{**dict(n_embd=1280, n_layer=36, n_head=20), **overrides})

    @classmethod
    def gpt2_xl(cls, **overrides):
        """GPT-2 XL: L=48, C=1600, H=25 (1.5B)."""
        return cls(**{**dict(n_embd=1600, n_layer=48, n_head=25), **overrides})

    @classmethod
    def gpt3_small(cls, **overrides):
        """GPT-3 Small: L=12, C=768, H=12, 2,048 positions, alternating dense/local (125M)."""
        n_layer = overrides.get("n_layer", 12)
        return cls(**{**dict(n_positions=2048, attention_layers=_alternating(n_layer)),
                      **overrides})

    @classmethod
    def gpt3_175b(cls, **overrides):
        """GPT-3 175B: L=96, C=12288, H=96 (D=128), 2,048 positions, alternating (175B)."""
        n_layer = overrides.get("n_layer", 96)
        return cls(**{**dict(n_positions=2048, n_embd=12288, n_layer=96, n_head=96,
                             attention_layers=_alternating(n_layer)), **overrides})

    @classmethod
    def tiny(cls, **overrides):
        """A few thousand parameters for tests; F=37 so a mixed-up axis fails loudly."""
        return cls(**{**dict(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                             n_inner=37, bos_token_id=1, eos_token_id=2), **overrides})

    # Hugging Face's config.json in and out.
    @classmethod
    def from_hf(cls, hf):
        """From a Hugging Face config dict (model_type "gpt2" or "openai-gpt").

        Refuses GPT-2 options this file does not implement rather than computing something
        else: attention scaled by layer index, reordered/upcast attention, no 1/sqrt(D).
        """
        model_type = hf.get("model_type", "gpt2")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"GPTConfig.from_hf: model_type {model_type!r} is not one of "
                             f"{MODEL_TYPES}")
        for key, ok in (("scale_attn_by_inverse_layer_idx", False),
                        ("reorder_and_upcast_attn", False), ("scale_attn_weights", True),
                        ("add_cross_attention", False)):
            if hf.get(key, ok) != ok:
                raise ValueError(f"GPTConfig.from_hf: {key}={hf[key]} is not implemented")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in names}
        kwargs["num_labels"] = num_labels_from_hf(hf)
        if model_type == "openai-gpt":
            kwargs["activation_function"] = hf.get("afn", "gelu")
            kwargs.pop("n_inner", None)  # GPT-1's feed-forward is always 4 C
            kwargs.setdefault("bos_token_id", None)
            kwargs.setdefault("eos_token_id", None)
        if kwargs.get("attention_layers") is not None:
            kwargs["attention_layers"] = tuple(kwargs["attention_layers"])
        return cls(**kwargs)

    def to_hf(self):
        """A Hugging Face config dict, loadable by transformers.

        GPT-3's `attention_layers` and `local_window` are written too, but transformers
        ignores them: it loads such a checkpoint as dense GPT-2, which computes the same
        thing only while no input is longer than local_window.
        """
        hf = dataclasses.asdict(self)
        hf.update(num_labels_to_hf(hf.pop("num_labels")))
        if self.attention_layers is None:
            del hf["attention_layers"], hf["local_window"]
        else:
            hf["attention_layers"] = list(self.attention_layers)
        if self.model_type == "openai-gpt":
            hf["afn"] = hf.pop("activation_function")
            del hf["n_inner"]
        return hf


def _alternating(n_layer):
    """GPT-3's pattern: dense, local, dense, local, ..."""
    return tuple("global" if i % 2 == 0 else "local" for i in range(n_layer))


def num_parameters(config):
    """Parameters of the GPT backbone for `config`, from the config alone (nothing allocated).

    Embeddings: (V + n_positions) C. Each layer: c_attn C 3C + 3C, c_proj C^2 + C,
    c_fc C F + F, mlp.c_proj F C + C, two LayerNorms 4C; with F = 4C that is 12 C^2 + 13 C.
    GPT-2/3 add ln_f, 2C. The LM head adds nothing (tied); sparse layers add nothing.

        GPTConfig.gpt1()           116,534,784  "117M"
        GPTConfig.gpt2()           124,439,808  "124M" (the paper's "117M")
        GPTConfig.gpt2_medium()    354,823,168  "355M" (the paper's "345M")
        GPTConfig.gpt2_large()     774,030,080  "774M" (the paper's "762M")
        GPTConfig.gpt2_xl()      1,557,611,200  "1.5B" (the paper's "1542M")
        GPTConfig.gpt3_small()     125,226,240  "125M"
        GPTConfig.gpt3_175b()  174,604,259,328  "175B"
    """
    C, F = config.n_embd, config.inner_dim
    embeddings = (config.vocab_size + config.n_positions) * C
    layer = (C * 3 * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C) + 2 * 2 * C
    final = 2 * C if config.model_type == "gpt2" else 0
    return embeddings + config.n_layer * layer + final


# --- masks and positions -------------------------------------------------------------------


def band(T, S, window):
    """(T, S) booleans of a causal band: query t, at position S - T + t (after S - T cached
    keys), sees key s iff S - T + t - window < s <= S - T + t.

    GPT-3's "locally banded" sparse attention (Child et al. 2019's local pattern): each
    token sees itself and the window - 1 tokens before it. With window >= S it is exactly
    dense causal attention (npplm.layers.causal_mask).
    """
    q = np.arange(S - T, S)[:, None]  # (T, 1): absolute position of each query
    k = np.arange(S)[None, :]  # (1, S)
    return (k <= q) & (k > q - window)  # (T, S)


# --- building blocks -----------------------------------------------------------------------


class GPTAttention(Module):
    """Causal multi-head self-attention with one fused Q/K/V projection (c_attn) and the
    output projection (c_proj): c_proj(softmax(Q K^T / sqrt(D) + bias) V)."""

    def __init__(self, config, rng, proj_std):
        C, std = config.n_embd, config.initializer_range
        self.n_head = config.n_head
        self.c_attn = Linear(C, 3 * C, std=std, rng=rng)  # (out, in) = (3C, C)
        self.c_proj = Linear(C, C, std=proj_std, rng=rng)
        self.attn_dropout = Dropout(config.attn_pdrop, rng)
        self.resid_dropout = Dropout(config.resid_pdrop, rng)

    def forward(self, x, bias, cache=None, layer=0):
        q, k, v = split(self.c_attn(x), sections=3, axis=-1)  # (B, T, 3C) -> 3 x (B, T, C)
        q = split_heads(q, self.n_head)  # (B, T, C) -> (B, H, T, D)
        k = split_heads(k, self.n_head)  # (B, T, C) -> (B, H, T, D)
        v = split_heads(v, self.n_head)  # (B, T, C) -> (B, H, T, D)
        if cache is not None:
            # The cache holds raw arrays: keys and values of earlier tokens are constants,
            # so no gradient flows into them (decoding runs under no_grad anyway).
            k, v = cache.update(layer, k, v)  # -> (B, H, S, D) each, S = cached + T
            k, v = Tensor(k), Tensor(v)
        y = attention(q, k, v, bias=bias, dropout=self.attn_dropout)  # (B, H, T, D)
        y = merge_heads(y)  # (B, H, T, D) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class GPTMLP(Module):
    """The position-wise feed-forward sublayer: c_proj(GELU(c_fc(x))), C -> F -> C."""

    def __init__(self, config, rng, proj_std):
        C, F = config.n_embd, config.inner_dim
        self.c_fc = Linear(C, F, std=config.initializer_range, rng=rng)
        self.c_proj = Linear(F, C, std=proj_std, rng=rng)
        # GPT-1's "gelu" is the tanh approximation too (Hugging Face's ACT_FNS["gelu"]).
        self.act = (gelu_tanh if config.model_type == "openai-gpt"
                    and config.activation_function == "gelu"
                    else activation(config.activation_function))
        self.dropout = Dropout(config.resid_pdrop, rng)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C) -> (B, T, C)


class GPT2Block(Module):
    """Pre-LN (GPT-2, GPT-3): h = h + attn(ln_1(h)); h = h + mlp(ln_2(h))."""

    def __init__(self, config, rng):
        C, eps = config.n_embd, config.layer_norm_epsilon
        # Section 2.3: residual projections start smaller, by 1/sqrt(number of residual
        # additions), so that the residual stream's variance does not grow with depth.
        proj_std = config.initializer_range / math.sqrt(2 * config.n_layer)
        self.ln_1 = LayerNorm(C, eps=eps)
        self.attn = GPTAttention(config, rng, proj_std)
        self.ln_2 = LayerNorm(C, eps=eps)
        self.mlp = GPTMLP(config, rng, proj_std)

    def forward(self, h, bias, cache=None, layer=0):
        h = h + self.attn(self.ln_1(h), bias, cache, layer)
        return h + self.mlp(self.ln_2(h))


class OpenAIGPTBlock(Module):
    """Post-LN (GPT-1): h = ln_1(h + attn(h)); h = ln_2(h + mlp(h)). No scaled init."""

    def __init__(self, config, rng):
        C, eps, std = config.n_embd, config.layer_norm_epsilon, config.initializer_range
        self.attn = GPTAttention(config, rng, std)  # key order as in the checkpoint
        self.ln_1 = LayerNorm(C, eps=eps)
        self.mlp = GPTMLP(config, rng, std)
        self.ln_2 = LayerNorm(C, eps=eps)

    def forward(self, h, bias, cache=None, layer=0):
        h = self.ln_1(h + self.attn(h, bias, cache, layer))
        return self.ln_2(h + self.mlp(h))


# --- the backbones -------------------------------------------------------------------------

# Buffers older checkpoints store next to the weights: the causal mask and its fill value.
_BUFFERS = (r"(^|\.)attn\.bias$", r"(^|\.)attn\.masked_bias$", r"(^|\.)position_ids$")


class GPTPreTrainedModel(PreTrainedModel):
    """What every GPT class shares: config, backbone name, the Conv1D transposes, and the
    shape of its KV cache (npplm.generation)."""

    config_class = GPTConfig
    base_model_prefix = "transformer"
    ignore_on_load = _BUFFERS

    def load_weights(self, state):
        """Load a Hugging Face state: the Conv1D weights arrive (in, out), are stored (out, in)."""
        return super().load_weights({k: (v.T if k.endswith(CONV1D_WEIGHTS) else v)
                                     for k, v in state.items()})

    def checkpoint_state(self):
        """{checkpoint key: array} as Hugging Face stores it: Conv1D weights (in, out),
        tied weights once."""
        return {k: (v.T if k.endswith(CONV1D_WEIGHTS) else v)
                for k, v in self.state_dict(remove_duplicates=True).items()}

    def kv_cache_layout(self):
        """(L, K, D): every layer caches all its heads (no grouped-query attention: K = H)."""
        return self.config.n_layer, self.config.n_head, self.config.head_dim


class _GPTBackbone(GPTPreTrainedModel):
    """The forward pass GPT-1 and GPT-2 share; subclasses name their tables and blocks."""

    def _parts(self):
        """(token table, position table, blocks, final LayerNorm or None)."""
        raise NotImplementedError

    def forward(self, input_ids, attention_mask=None, cache=None, position_ids=None):
        """ids (B, T) -> ModelOutput(last_hidden_state (B, T, C)).

        input_ids       (B, T) integers in [0, V)
        attention_mask  (B, S) 1 for tokens, 0 for padding, S = cache.length + T: the mask
                        covers the cached tokens too; None: attend to every earlier token
        cache           a KVCache: the keys and values of this call are appended to it,
                        and attention covers everything cached before
        position_ids    (B, T) or (T,); None: from the mask (see the module docstring), or
                        cache.length .. cache.length + T - 1 without one
        """
        wte, wpe, blocks, ln_f = self._parts()
        input_ids, position_ids, biases = self.layer_inputs(input_ids, attention_mask, cache,
                                                            position_ids)
        h = wte(input_ids) + wpe(position_ids)  # (B, T, C) + (B or 1, T, C) -> (B, T, C)
        h = self.drop(h)
        for i, (block, kind) in enumerate(zip(blocks, self.config.layer_kinds())):
            h = run_block(self, block, h, biases[kind], cache, i)  # (B, T, C)
        if cache is not None:
            cache.advance(input_ids.shape[1])  # every layer wrote its T positions
        if ln_f is not None:
            h = ln_f(h)
        return ModelOutput(last_hidden_state=h)

    def layer_inputs(self, input_ids, attention_mask=None, cache=None, position_ids=None):
        """What forward computes before its first block, from its arguments (checked):
        (input_ids (B, T), position_ids (B or 1, T), {layer kind: attention mask}).
        A pipeline stage (npplm.distributed.pipeline) calls it to run a slice of the blocks.
        """
        config = self.config
        wte = self._parts()[0]
        input_ids = int_array(input_ids, "input_ids")
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must have shape (B, T) with T >= 1, got "
                             f"{input_ids.shape}")
        B, T = input_ids.shape
        past = 0 if cache is None else cache.length
        S = past + T
        if S > config.n_positions:
            raise ValueError(f"{past} cached + {T} new positions = {S} exceed n_positions="
                             f"{config.n_positions}: the model learned no position beyond "
                             "that; shorten the input")
        dtype = wte.weight.dtype
        if attention_mask is not None:
            mask = to_numpy(as_array(attention_mask)) != 0  # (B, S) on the host
            if mask.shape != (B, S):
                raise ValueError(f"attention_mask has shape {mask.shape} but must be (B, S) = "
                                 f"{(B, S)}: {past} cached + {T} new positions")
        if position_ids is None:
            if attention_mask is not None:
                position_ids = positions_from_mask(mask, T)  # (B, T)
            else:
                position_ids = np.arange(past, S)[None, :]  # (1, T)
        position_ids = int_array(position_ids, "position_ids")

        # One mask per kind of layer. Dense causal attention gets a CausalMask (the padding
        # mask, or None): `attention` builds the bias from it only where no fused kernel
        # runs. GPT-3's banded layers get an additive bias: the band and the padding,
        # combined as booleans first, so that a key masked twice stays at the dtype's min.
        biases = {}
        for kind in set(config.layer_kinds()):
            if kind == "global":
                biases[kind] = CausalMask(None if attention_mask is None else mask)
                continue
            allowed = band(T, S, config.local_window)  # (T, S)
            if attention_mask is not None:
                allowed = allowed & mask[:, None, None, :]  # & (B, 1, 1, S) -> (B, 1, T, S)
            biases[kind] = additive_mask(allowed, dtype)  # on the host: attention moves it
        return input_ids, position_ids, biases


class GPT2Model(_GPTBackbone):
    """GPT-2 (and GPT-3): wte, wpe, pre-LN blocks h.0 .. h.{L-1}, ln_f.

    `rng` lets an LM head share its generator; otherwise weights are drawn from `seed`
    as Hugging Face initialises them: N(0, 0.02^2), residual projections N(0, 0.02^2 / 2L),
    zero biases, LayerNorm 1 and 0.
    """

    def __init__(self, config, seed=0, rng=None):
        if config.model_type != "gpt2":
            raise ValueError(f"GPT2Model needs model_type 'gpt2', got {config.model_type!r}")
        rng = np.random.default_rng(seed) if rng is None else rng
        C, std = config.n_embd, config.initializer_range
        self.config = config
        self.wte = Embedding(config.vocab_size, C, std=std, rng=rng, what="token id")
        self.wpe = Embedding(config.n_positions, C, std=std, rng=rng, what="position")
        self.drop = Dropout(config.embd_pdrop, rng)
        self.h = [GPT2Block(config, rng) for _ in range(config.n_layer)]
        self.ln_f = LayerNorm(C, eps=config.layer_norm_epsilon)

    def _parts(self):
        return self.wte, self.wpe, self.h, self.ln_f


class OpenAIGPTModel(_GPTBackbone):
    """GPT-1: tokens_embed, positions_embed, post-LN blocks h.0 .. h.{L-1}; no final LN."""

    def __init__(self, config, seed=0, rng=None):
        if config.model_type != "openai-gpt":
            raise ValueError(f"OpenAIGPTModel needs model_type 'openai-gpt', got "
                             f"{config.model_type!r}")
        rng = np.random.default_rng(seed) if rng is None else rng
        C, std = config.n_embd, config.initializer_range
        self.config = config
        self.tokens_embed = Embedding(config.vocab_size, C, std=std, rng=rng, what="token id")
        self.positions_embed = Embedding(config.n_positions, C, std=std, rng=rng,
                                         what="position")
        self.drop = Dropout(config.embd_pdrop, rng)
        self.h = [OpenAIGPTBlock(config, rng) for _ in range(config.n_layer)]

    def _parts(self):
        return self.tokens_embed, self.positions_embed, self.h, None


# --- the language-model heads --------------------------------------------------------------


class _GPTLMHead(GPTPreTrainedModel, GenerationMixin):
    """logits = backbone(ids) @ table^T, (B, T, C) -> (B, T, V), the table tied."""

    backbone_class = None

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.transformer = self.backbone_class(config, rng=rng)
        self.lm_head = Linear.tied(self.transformer._parts()[0].weight)  # the (V, C) table

    def forward(self, input_ids, attention_mask=None, labels=None, cache=None,
                position_ids=None):
        """-> ModelOutput(logits (B, T, V), loss with labels (B, T): next-token CE).

        See the backbone's forward for the arguments; labels are shifted inside.
        """
        h = self.transformer(input_ids, attention_mask, cache, position_ids).last_hidden_state
        logits = self.lm_head(h)  # (B, T, C) @ (C, V) -> (B, T, V)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits)


class GPT2LMHeadModel(_GPTLMHead):
    """GPT-2 (and GPT-3) with its tied language-model head."""

    backbone_class = GPT2Model


class OpenAIGPTLMHeadModel(_GPTLMHead):
    """GPT-1 with its tied language-model head."""

    backbone_class = OpenAIGPTModel


# --- sequence classification: reward models -------------------------------------------------


class GPT2ForSequenceClassification(SequenceClassifierMixin, GPTPreTrainedModel):
    """GPT-2 with a linear score on its last real token: a classifier, or (num_labels = 1)
    the reward model of RLHF. Keys as Hugging Face's: transformer.*, score.weight."""

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.transformer = GPT2Model(config, rng=rng)
        self.score = Linear(config.n_embd, config.num_labels, bias=False,
                            std=config.initializer_range, rng=rng)  # (num_labels, C)
