"""ChatGLM2/3 and GLM-4 (transformers' "glm"): LLaMA's decoder with q/k/v biases, a fused
gate/up projection, and rotary positions on part of each head, pairing neighbouring dims.

Papers: Team GLM, "ChatGLM: A Family of Large Language Models from GLM-130B to GLM-4 All
Tools" (2024), arXiv:2406.12793 (the architecture of ChatGLM2, ChatGLM3 and GLM-4); Zeng et
al., "GLM-130B: An Open Bilingual Pre-trained Model" (2022), arXiv:2210.02414; Du et al.,
"GLM: General Language Model Pretraining with Autoregressive Blank Infilling" (2021),
arXiv:2103.10360. Reference implementation: Hugging Face transformers,
`models/glm/modeling_glm.py` (generated from `modular_glm.py`; checked against transformers
5.x with `attn_implementation="eager"`), whose checkpoint keys our attribute paths
reproduce. It reads the "-hf" checkpoints (THUDM/glm-4-9b-hf, glm-4-9b-chat-hf, ...);
THUDM's original ones (model_type "chatglm", remote code `modeling_chatglm.py`) hold the
same function under other key names and need transformers' converter first.

Not to be confused with npplm/models/glm.py: that is the 2021 GLM (blank infilling, 2D
positions, DeepNorm; classes GLM*, model_type "npplm-glm"). This file is its descendants'
decoder as transformers ships it, under transformers' names (GlmConfig, GlmModel,
GlmForCausalLM, GlmForSequenceClassification; model_type "glm"). From ChatGLM2 on, the
family kept GLM's name but not its blank-infilling layout: one position per token, a causal
mask everywhere. The source notes sum it up as having "absorbed LLaMA's strengths: SwiGLU,
RoPE, multi-query attention".

Read npplm/models/llama.py first: this file is built from its pieces. What is different
from GPT-2 (the baseline a reader studies first), all of it LLaMA's:
  - RMSNorm instead of LayerNorm (pre-norm, and a final norm `model.norm`).
  - Rotary positions (RoPE) in every attention layer instead of a learned position table.
  - SwiGLU feed-forward, down(up(x) * silu(gate(x))), F = 13696 at C = 4096 (3.34 C).
  - Grouped-query attention: H = 32 query heads share K = 2 key/value heads. THUDM's code
    calls it `multi_query_attention` with `multi_query_group_num` = 2 (the notes'
    "multi-query attention"): two groups of 16 heads, grouped-query attention in
    today's words (K = 1 would be multi-query). The KV cache holds K heads.
  - No dropout; the LM head is untied.
What is different from LLaMA:
  1. q_proj, k_proj and v_proj have a bias (attention_bias, true in every published
     model); o_proj and the MLP have none: the report drops every bias but these, for
     length extrapolation, as Qwen2 does (qwen2.py). The biases are added before the
     rotation, q = rope(x W_q^T + b_q); b_q (H D,), b_k and b_v (K D,).
     attention_bias=False gives LLaMA's bias-free projections.
  2. The rotation touches only the first R = D * partial_rotary_factor dims of each head
     (0.5 in every published model: R = 64 of D = 128); the other D - R dims of q and k
     carry no position at all, so their part of a score q . k is pure content. This is
     what is left of GLM's 2D positions (glm.py): THUDM's ChatGLM-6B code rotated one
     half of each head by the token's position and the other half by its position
     inside a blank; with one position per token (ChatGLM2 on) the second half is simply
     not rotated. The frequencies are spread over R, not D: w_j = theta^(-2j / R), j < R/2.
  3. The rotated dims are paired with their neighbours, (x[2j], x[2j+1]), as in the
     RoFormer paper and Meta's original LLaMA code, not as Hugging Face's LLaMA pairs them
     (x[j], x[j + D/2], npplm/layers/rotary.py). For position m and j < R/2:
         out[2j]     = x[2j]     cos(m w_j) - x[2j+1] sin(m w_j)
         out[2j+1]   = x[2j+1]   cos(m w_j) + x[2j]   sin(m w_j)
         out[i]      = x[i]                                          for i >= R
     The checkpoints' q/k rows are in this order, so we rotate in it (`rotate_pairs`,
     `apply_partial_rotary` below) rather than permute the rows as llama.cpp does for
     LLaMA: the key map stays the identity and gradients need no un-permuting.
  4. The MLP's gate and up matrices are one Linear, gate_up_proj (2F, C): gate rows first,
     then up rows (Phi-3's MLP, THUDM's dense_h_to_4h). gate, up = chunk(x W^T, 2); the
     output is down(up * silu(gate)), the same SwiGLU as LLaMA's.
  5. Sizes and constants. GLM-4-9B: V = 151552, L = 40, rms_norm_eps 1.5625e-7, theta
     10000 (GLM-4-9B-Chat: 5,000,000, THUDM's rope_ratio 500, for 128K positions), eos
     a list of three ids (<|endoftext|>, <|user|>, <|observation|>: a reply also ends
     where the user's next turn or a tool's result would begin), kept as a tuple.
     ChatGLM2/3-6B: the same block, V = 65024, L = 28, eps 1e-5, theta 10000.
  6. Config keys: transformers 5 writes rope_parameters = {rope_type, rope_theta,
     partial_rotary_factor}; 4.x files (the published -hf ones) have rope_theta and
     partial_rotary_factor at the top level. A file without partial_rotary_factor means
     0.5 (transformers' GlmConfig sets that default "for BC"). Refused: rope scalings other
     than "default", attention dropout, activations other than silu, other model_types
     ("chatglm" is THUDM's remote-code format; transformers' "glm4", GLM-4-0414, adds
     two more RMSNorms per block, after the attention and after the MLP).

The classes reuse llama.py's: RMSNorm, repeat_kv, and the forward passes of the block, the
backbone and the LM head are LLaMA's functions themselves (`forward =
LlamaDecoderLayer.forward`, ...). GlmAttention is LlamaAttention copied with a marker (the
rotation differs), GlmMLP is new (one fused matrix), and GlmModel.layer_inputs is LLaMA's
with the cos/sin tables laid out for neighbouring pairs. Masks, positions (cumsum of the
mask under left padding), the KV cache of K heads and generation behave as in llama.py.

The checkpoint key map is the identity: model.embed_tokens.weight,
model.layers.N.self_attn.{q,k,v}_proj.{weight,bias} (no biases when attention_bias is
false), model.layers.N.self_attn.o_proj.weight, model.layers.N.mlp.gate_up_proj.weight
(2F, C), model.layers.N.mlp.down_proj.weight, model.layers.N.{input,post_attention}_
layernorm.weight, model.norm.weight, lm_head.weight (absent when tied).
GlmForSequenceClassification has score.weight instead of lm_head. Not implemented: GGUF
files (llama.cpp's "chatglm" architecture), GlmForTokenClassification.

Parameter counts (num_parameters, equal to transformers' on the meta device):
    glm4_9b       9,399,951,360    glm4_9b_chat   9,399,951,360
    chatglm3_6b   6,243,584,000

Glossary of shape letters: B batch, T query length, S key length (cached prefix + T),
C model width (hidden_size), H query heads, K key/value heads, D head dim, R rotated dims
of a head (D * partial_rotary_factor), F feed-forward width (intermediate_size),
V vocabulary, L layers.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from autograd import Tensor, array_module, concatenate, split, stack
from npplm.generation import GenerationMixin
from npplm.layers import (
    Embedding,
    Linear,
    Module,
    RMSNorm,
    attention,
    merge_heads,
    rope_frequencies,
    silu,
)
from npplm.layers.rotary import heads_broadcast
from npplm.models.base import (
    SequenceClassifierMixin,
    check_divides,
    check_positive_ints,
    check_scales,
    check_token_ids,
    num_labels_from_hf,
    num_labels_to_hf,
)
from npplm.models.llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    repeat_kv,
)
from npplm.models.llama import num_parameters as llama_num_parameters

MODEL_TYPE = "glm"  # transformers' model_type; the 2021 GLM of glm.py is "npplm-glm"


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class GlmConfig:
    """GLM-4's hyperparameters, named as in Hugging Face's config.json (defaults: those of
    transformers' GlmConfig, GLM-4-9B's shape with 131072 positions; the presets below are
    the published models). `eos_token_id` is an id, a tuple of ids (a list in config.json)
    or None."""

    vocab_size: int = 151552  # V: GLM-4's tokenizer (ChatGLM2/3: 65024)
    hidden_size: int = 4096  # C: the residual stream width
    intermediate_size: int = 13696  # F: SwiGLU width (gate_up_proj has 2F rows)
    num_hidden_layers: int = 40  # L: decoder blocks
    num_attention_heads: int = 32  # H: query heads
    num_key_value_heads: int | None = 2  # K: key/value heads; None: K = H (no GQA)
    head_dim: int | None = 128  # D, set explicitly in GLM configs; None: C / H
    hidden_act: str = "silu"  # the SwiGLU gate (only silu is implemented)
    max_position_embeddings: int = 131072  # longest input (cached prefix included)
    initializer_range: float = 0.02  # std of the normal initialisation of weights
    rms_norm_eps: float = 1.5625e-7  # GLM-4's; 1e-5 in ChatGLM2/3
    pad_token_id: int | None = 151329  # <|endoftext|>; its embedding row starts at 0
    bos_token_id: int | None = None
    eos_token_id: int | tuple | None = (151329, 151336, 151338)  # endoftext, user, observation
    tie_word_embeddings: bool = False  # lm_head = embed_tokens (no published GLM-4 does)
    attention_bias: bool = True  # biases on q_proj, k_proj, v_proj (never on o_proj)
    num_labels: int = 2  # outputs of GlmForSequenceClassification; 1 for a reward model
    rope_theta: float = 10000.0  # RoPE base: 10000, or 5e6 in GLM-4-9B-Chat (128K)
    partial_rotary_factor: float = 0.5  # R / D: the share of each head that is rotated

    def __post_init__(self):
        # Fill the derived defaults (as Hugging Face's GlmConfig does) in the frozen fields.
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if isinstance(self.eos_token_id, list):  # config.json's list; a tuple stays hashable
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        check_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size",
                            "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                            "max_position_embeddings", "num_labels")
        if self.head_dim is None:
            check_divides(self, "hidden_size", "num_attention_heads")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        check_positive_ints(self, "head_dim")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"GlmConfig: num_attention_heads={self.num_attention_heads} is "
                             f"not divisible by num_key_value_heads={self.num_key_value_heads}"
                             ": each key/value head serves a whole group of query heads")
        if self.hidden_act != "silu":
            raise ValueError(f"GlmConfig: hidden_act={self.hidden_act!r} is not implemented "
                             "(GLM's SwiGLU uses 'silu')")
        if not 0 < self.partial_rotary_factor <= 1:
            raise ValueError(f"GlmConfig: partial_rotary_factor={self.partial_rotary_factor} "
                             "must be in (0, 1]: the share of each head that RoPE rotates")
        R = self.rotary_dim
        if R < 2 or R % 2:
            raise ValueError(f"GlmConfig: head_dim={self.head_dim} times partial_rotary_factor"
                             f"={self.partial_rotary_factor} gives {R} rotated dims; RoPE "
                             "needs a positive even number (it rotates pairs of dims)")
        check_scales(self, positive=["rms_norm_eps", "rope_theta"],
                     non_negative=["initializer_range"])
        check_token_ids(self, "pad_token_id", optional=True)

    @property
    def rotary_dim(self):
        """R = int(D * partial_rotary_factor), as transformers truncates it: 64 in GLM-4."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def rope_parameters(self):
        """The rope_parameters dict of transformers 5's config.json (no scaling: "default")."""
        return {"rope_type": "default", "rope_theta": self.rope_theta,
                "partial_rotary_factor": self.partial_rotary_factor}

    # Presets: the released config.json files (the -hf conversions transformers loads).
    @classmethod
    def glm4_9b(cls, **overrides):
        """GLM-4-9B base: V=151552, L=40, C=4096, H=32, K=2, D=128 (R=64), F=13696, 8192
        positions, theta 10000 (9,399,951,360 parameters)."""
        return cls(**{**dict(vocab_size=151552, hidden_size=4096, intermediate_size=13696,
                             num_hidden_layers=40, num_attention_heads=32,
                             num_key_value_heads=2, head_dim=128,
                             max_position_embeddings=8192, rms_norm_eps=1.5625e-7,
                             rope_theta=10000.0, partial_rotary_factor=0.5,
                             pad_token_id=151329, eos_token_id=(151329, 151336, 151338)),
                      **overrides})

    @classmethod
    def glm4_9b_chat(cls, **overrides):
        """GLM-4-9B-Chat: GLM-4-9B's shape, 131072 positions with theta 5,000,000 (THUDM's
        rope_ratio 500) (9,399,951,360)."""
        return cls.glm4_9b(**{**dict(max_position_embeddings=131072, rope_theta=5000000.0),
                              **overrides})

    @classmethod
    def chatglm3_6b(cls, **overrides):
        """ChatGLM3-6B's shape (THUDM's chatglm config: padded_vocab_size, num_layers, ...
        mapped to these names): V=65024, L=28, C=4096, H=32, K=2, D=128 (R=64), F=13696,
        8192 positions, eps 1e-5, theta 10000 (6,243,584,000). The same block as GLM-4's
        (q/k/v biases, neighbouring pairs on half of each head); THUDM's checkpoint needs
        its keys converted before it loads here."""
        return cls(**{**dict(vocab_size=65024, hidden_size=4096, intermediate_size=13696,
                             num_hidden_layers=28, num_attention_heads=32,
                             num_key_value_heads=2, head_dim=128,
                             max_position_embeddings=8192, rms_norm_eps=1e-5,
                             rope_theta=10000.0, partial_rotary_factor=0.5,
                             pad_token_id=0, eos_token_id=2), **overrides})

    @classmethod
    def tiny(cls, **overrides):
        """A few thousand parameters for tests: H=4 query heads sharing K=2 key/value heads
        (GQA), D=8 of which R=4 rotated; the widths differ (F=37) so that a mixed-up axis
        fails loudly. eos 2 (an id inside the vocabulary), no pad token."""
        return cls(**{**dict(vocab_size=64, hidden_size=32, intermediate_size=37,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             head_dim=8, max_position_embeddings=64, pad_token_id=None,
                             eos_token_id=2), **overrides})

    # Hugging Face's config.json in and out.
    @classmethod
    def from_hf(cls, hf):
        """From a Hugging Face config dict (transformers 4.x top-level `rope_theta` and
        `partial_rotary_factor`, or 5.x `rope_parameters`); keys GLM does not use are
        ignored. Refuses what this file does not implement: RoPE scaling, attention
        dropout, other model types."""
        model_type = hf.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"GlmConfig.from_hf: model_type {model_type!r} is not "
                             f"{MODEL_TYPE!r} (THUDM's 'chatglm' checkpoints need "
                             "transformers' converter; 'glm4' has extra norms per block)")
        if hf.get("attention_dropout"):
            raise ValueError("GlmConfig.from_hf: attention_dropout="
                             f"{hf['attention_dropout']} is not implemented (must be 0)")
        for key in ("rope_parameters", "rope_scaling"):  # 5.x and 4.x spellings
            rope = hf.get(key) or {}
            rope_type = rope.get("rope_type", rope.get("type", "default"))
            if rope_type != "default":
                raise ValueError(f"GlmConfig.from_hf: rope scaling {rope_type!r} is not "
                                 "implemented")
        names = {f.name for f in dataclasses.fields(cls)} - {"rope_theta",
                                                             "partial_rotary_factor"}
        kwargs = {k: v for k, v in hf.items() if k in names}
        kwargs["num_labels"] = num_labels_from_hf(hf)
        rope = hf.get("rope_parameters") or {}
        kwargs["rope_theta"] = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
        kwargs["partial_rotary_factor"] = float(rope.get(
            "partial_rotary_factor", hf.get("partial_rotary_factor", 0.5)))
        return cls(**kwargs)

    def to_hf(self):
        """A Hugging Face config dict (model_type "glm"), in transformers 5's rope format."""
        hf = dataclasses.asdict(self)
        hf.update(num_labels_to_hf(hf.pop("num_labels")))
        del hf["rope_theta"], hf["partial_rotary_factor"]
        hf["rope_parameters"] = self.rope_parameters
        if isinstance(self.eos_token_id, tuple):
            hf["eos_token_id"] = list(self.eos_token_id)
        hf.update(model_type=MODEL_TYPE, attention_dropout=0.0)
        return hf


def num_parameters(config, with_lm_head=True):
    """Parameters of GlmForCausalLM (GlmModel: with_lm_head=False), from the config alone:
    LLaMA's count (llama.num_parameters: the fused gate_up_proj holds the same 2 C F as
    gate_proj and up_proj) plus the q, k and v biases, (H + 2K) D per layer.

        glm4_9b  9,399,951,360    chatglm3_6b  6,243,584,000
    """
    H, K, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    biases = config.num_hidden_layers * (H + 2 * K) * D if config.attention_bias else 0
    return llama_num_parameters(config, with_lm_head) + biases


# --- the rotation: neighbouring pairs, first R dims -----------------------------------------


def interleaved_cos_sin(cos, sin):
    """LLaMA's tables (..., T, R), [a_0 .. a_{R/2-1}, a_0 .. a_{R/2-1}] (rope_cos_sin: one
    angle for dims j and j + R/2) -> GLM's, each angle twice in a row, [a_0, a_0, a_1, a_1,
    ...] (one angle for dims 2j and 2j + 1). Raw arrays, NumPy or CuPy. Hugging Face's
    apply_rotary_pos_emb does the same (repeat_interleave(2)) in every layer; we do it once.
    """
    half = cos.shape[-1] // 2
    xp = array_module(cos)
    cos = xp.repeat(cos[..., :half], 2, axis=-1)  # (..., T, R) -> (..., T, R/2) -> (..., T, R)
    sin = xp.repeat(sin[..., :half], 2, axis=-1)  # (..., T, R) -> (..., T, R/2) -> (..., T, R)
    return cos, sin


def rotate_pairs(x):
    """GLM's rotate_half: each neighbouring pair (x[2j], x[2j+1]) -> (-x[2j+1], x[2j]),
    multiplication by i of the complex number x[2j] + i x[2j+1]. (..., R) -> (..., R)."""
    even, odd = x[..., 0::2], x[..., 1::2]  # (..., R) -> 2 x (..., R/2)
    pairs = stack(-odd, even, axis=-1)  # 2 x (..., R/2) -> (..., R/2, 2)
    return pairs.reshape(*x.shape)  # (..., R/2, 2) -> (..., R): -x1, x0, -x3, x2, ...


def apply_partial_rotary(x, cos, sin):
    """rope(x) on the first R dims of each head, neighbouring pairs; the rest unchanged:
        [x_rot * cos + rotate_pairs(x_rot) * sin,  x_pass]     (the module docstring's 3.)

    x (B, n, T, D) Tensor (n = H for q, K for k); cos, sin (T, R) or (B, T, R) tables of
    `interleaved_cos_sin`, constants -> (B, n, T, D). Hugging Face's apply_rotary_pos_emb
    in modeling_glm.py, composed of autograd primitives (getitem, neg, stack, reshape, mul,
    add, concatenate): the gradient is theirs, the transposed rotation on the first R dims
    (rotary.py's docstring derives it) and the identity on the rest.
    """
    R, D = cos.shape[-1], x.shape[-1]
    cos, sin = heads_broadcast(cos, sin)  # (B, T, R) -> (B, 1, T, R): every head alike
    x_rot = x[..., :R]  # (B, n, T, D) -> (B, n, T, R)
    rotated = x_rot * cos + rotate_pairs(x_rot) * sin  # (B, n, T, R)
    if R == D:  # partial_rotary_factor 1: the whole head
        return rotated
    return concatenate(rotated, x[..., R:], axis=-1)  # (B, n, T, R) + (B, n, T, D - R) -> D


# --- building blocks ------------------------------------------------------------------------


class GlmAttention(Module):
    """LLaMA's causal grouped-query attention with biased q, k, v projections and GLM's
    rotation (first R dims of each head, neighbouring pairs):
        q = rope_R(x W_q^T + b_q) (H heads), k = rope_R(x W_k^T + b_k), v = x W_v^T + b_v
        (K heads), y = W_o softmax(q k^T / sqrt(D) + causal and padding bias) v (no b_o).
    """

    # Adapted from npplm.models.llama.LlamaAttention: q/k/v biases (attention_bias) and
    # apply_partial_rotary instead of apply_rotary; the rest is LLaMA's, line for line.
    def __init__(self, config, rng):
        C, D, std = config.hidden_size, config.head_dim, config.initializer_range
        bias = config.attention_bias
        self.n_heads, self.n_kv_heads, self.head_dim = (config.num_attention_heads,
                                                        config.num_key_value_heads, D)
        self.q_proj = Linear(C, self.n_heads * D, bias=bias, std=std, rng=rng)  # b_q (H D,)
        self.k_proj = Linear(C, self.n_kv_heads * D, bias=bias, std=std, rng=rng)  # (K D,)
        self.v_proj = Linear(C, self.n_kv_heads * D, bias=bias, std=std, rng=rng)  # (K D,)
        self.o_proj = Linear(self.n_heads * D, C, bias=False, std=std, rng=rng)

    def forward(self, x, cos, sin, bias, cache=None, layer=0):
        B, T, _ = x.shape
        H, K, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, H, T, D)
        k = self.k_proj(x).reshape(B, T, K, D).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, K, T, D)
        v = self.v_proj(x).reshape(B, T, K, D).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, K, T, D)
        q, k = apply_partial_rotary(q, cos, sin), apply_partial_rotary(k, cos, sin)
        if cache is not None:
            # The cache keeps rotated keys (a key's rotation depends on its own position
            # only), K heads of them: (B, K, T, D) -> (B, K, S, D).
            k, v = (Tensor(a) for a in cache.update(layer, k, v))
        k, v = repeat_kv(k, H // K), repeat_kv(v, H // K)  # (B, K, S, D) -> (B, H, S, D)
        y = attention(q, k, v, bias=bias, scale=D ** -0.5)  # (B, H, T, D)
        return self.o_proj(merge_heads(y))  # (B, H, T, D) -> (B, T, H D) -> (B, T, C)


class GlmMLP(Module):
    """SwiGLU with one fused input matrix: gate, up = chunk(gate_up_proj(x), 2);
    down(up * silu(gate)). (B, T, C) -> (B, T, 2F) -> (B, T, F) -> (B, T, C)."""

    def __init__(self, config, rng):
        C, F, std = config.hidden_size, config.intermediate_size, config.initializer_range
        self.gate_up_proj = Linear(C, 2 * F, bias=False, std=std, rng=rng)  # (2F, C)
        self.down_proj = Linear(F, C, bias=False, std=std, rng=rng)  # (C, F)

    def forward(self, x):
        gate, up = split(self.gate_up_proj(x), sections=2, axis=-1)  # (B, T, 2F) -> 2 x F
        return self.down_proj(up * silu(gate))  # (B, T, F) -> (B, T, C)


class GlmDecoderLayer(Module):
    """One block, pre-norm:  x = x + Attention(RMSNorm(x));  x = x + MLP(RMSNorm(x))."""

    def __init__(self, config, rng):
        self.self_attn = GlmAttention(config, rng)
        self.mlp = GlmMLP(config, rng)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    forward = LlamaDecoderLayer.forward


# --- the backbone ---------------------------------------------------------------------------


class GlmPreTrainedModel(LlamaPreTrainedModel):
    """What every GLM-4 class shares: LLaMA's (backbone name "model", ignored rotary
    buffers, a KV cache of K heads) with GLM's config class."""

    config_class = GlmConfig


class GlmModel(GlmPreTrainedModel):
    """The decoder: ids (B, T) -> last_hidden_state (B, T, C), after the final RMSNorm.

    forward(input_ids, attention_mask=None, cache=None, position_ids=None) is LlamaModel's
    (see it for the arguments): the embedding, the blocks, the final norm; positions from
    the mask under left padding, or from the cache's length.
    """

    def __init__(self, config, seed=0, rng=None):
        rng = np.random.default_rng(seed) if rng is None else rng
        self.config = config
        # nn.Embedding(V, C, padding_idx=pad_token_id) in Hugging Face: the pad row starts at
        # zero and gets no gradient (<|endoftext|> in GLM-4's configs).
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size,
                                      std=config.initializer_range, rng=rng, what="token id",
                                      padding_idx=config.pad_token_id)
        self.layers = [GlmDecoderLayer(config, rng) for _ in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        # R/2 frequencies theta^(-2j/R), spread over the rotated dims only: (R/2,) float64.
        self.rope_frequencies = rope_frequencies(config.rotary_dim, config.rope_theta)

    forward = LlamaModel.forward

    def layer_inputs(self, input_ids, attention_mask=None, cache=None, position_ids=None):
        """LlamaModel.layer_inputs (checked ids, positions, the CausalMask), with the cos
        and sin tables (B or 1, T, R) laid out for neighbouring pairs."""
        input_ids, cos, sin, bias = LlamaModel.layer_inputs(self, input_ids, attention_mask,
                                                            cache, position_ids)
        cos, sin = interleaved_cos_sin(cos, sin)  # (B?, T, R), each angle twice in a row
        return input_ids, cos, sin, bias


class GlmForCausalLM(GlmPreTrainedModel, GenerationMixin):
    """The language model: logits (B, T, V) for the next token at every position.

    forward(input_ids, attention_mask=None, labels=None, cache=None, position_ids=None) is
    LlamaForCausalLM's: labels (B, T) are the input ids themselves (-100 where ignored),
    position t's logits scored against labels[t + 1]. Generation (npplm.generation) with a
    KVCache of the K key/value heads, as LLaMA's.
    """

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.model = GlmModel(config, rng=rng)
        if config.tie_word_embeddings:
            self.lm_head = Linear.tied(self.model.embed_tokens.weight)  # the (V, C) table
        else:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False,
                                  std=config.initializer_range, rng=rng)

    forward = LlamaForCausalLM.forward


class GlmForSequenceClassification(SequenceClassifierMixin, GlmPreTrainedModel):
    """GLM-4 with a linear score on its last real token: a classifier, or (num_labels = 1) a
    reward model, as llama.py's LlamaForSequenceClassification (base.SequenceClassifierMixin
    holds the forward, the pooling rule and `from_backbone`).

    Keys as Hugging Face's GlmForSequenceClassification: model.*, score.weight
    (num_labels, C), no bias.
    """

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.model = GlmModel(config, rng=rng)
        self.score = Linear(config.hidden_size, config.num_labels, bias=False,
                            std=config.initializer_range, rng=rng)  # (num_labels, C)
