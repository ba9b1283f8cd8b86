"""Qwen2 and Qwen2.5: LLaMA's decoder with biases on the query, key and value projections.

Papers: Bai et al., "Qwen Technical Report" (2023), arXiv:2309.16609 (the architecture,
section 2.2); Yang et al., "Qwen2 Technical Report" (2024), arXiv:2407.10671 (GQA and the
sizes, section 2.2); Qwen Team, "Qwen2.5 Technical Report" (2024), arXiv:2412.15115 (the
same architecture trained on more tokens). Reference implementation: Hugging Face
transformers, `models/qwen2/modeling_qwen2.py` (checked against transformers 5.x with
`attn_implementation="eager"`), whose checkpoint keys our attribute paths reproduce.

Read npplm/models/llama.py first: Qwen2 is built from its pieces. What is different from
GPT-2 (the baseline a reader studies first), all of it LLaMA's:
  - RMSNorm instead of LayerNorm (pre-norm, and a final norm `model.norm`), eps 1e-6.
  - Rotary positions (RoPE) in every attention layer instead of a learned position table,
    with base theta = 1,000,000 (Qwen2 report, long-context training in section 3.1:
    raised from 10,000 with the context, 4K -> 32K; LLaMA-2 has 10,000, LLaMA-3 500,000).
  - SwiGLU feed-forward, down(silu(gate(x)) * up(x)), F from 5.3 C to 5.9 C (4864 at C = 896).
  - Grouped-query attention: H query heads share K key/value heads (14 and 2 in the 0.5B
    model, 28 and 4 in the 7B), so the KV cache holds K heads.
  - Separate q/k/v/o projections stored (out, in); and of GPT-2's many biases (q, k, v, o,
    both MLP matrices, every LayerNorm), only the q, k and v ones remain (below).
What is different from LLaMA:
  1. q_proj, k_proj and v_proj have a bias; o_proj and the MLP have none. The Qwen report
     (section 2.2, "Bias") removes biases "for most layers" as PaLM does but keeps them "in
     the QKV layer of attention to enhance the extrapolation ability of the model". The
     biases are added before the rotation: q = rope(x W_q^T + b_q). Shapes: b_q (H D,),
     b_k and b_v (K D,). This is the only change to the forward pass.
  2. The vocabulary: byte-level BPE of 151,643 tokens plus control tokens (<|endoftext|>
     = 151643, <|im_start|>, <|im_end|>, ...), its embedding padded to V = 151936 (0.5B to
     3B) or 152064 (7B and up); a tokenizer.json read by npplm.tokenizers.
  3. The small models tie the LM head to the embedding (0.5B, 1.5B, and Qwen2.5-3B); the
     larger ones do not. Both are supported, as in llama.py.
  4. Config keys of its own. `use_sliding_window`, `sliding_window` and `max_window_layers`
     describe Mistral-style sliding-window attention (layers max_window_layers.. would read
     only the last sliding_window keys). No published Qwen2 or Qwen2.5 config turns it on
     (use_sliding_window false), and transformers 5 then reads sliding_window as None; we
     keep the values as config.json gives them and refuse use_sliding_window = true.
     attention_dropout must be 0. Long-context tricks of the reports (YaRN and Dual Chunk
     Attention beyond 32K, Qwen2 report section 3.1) live in rope_scaling entries that
     published configs leave out; they are refused too.

The classes reuse llama.py's by import: LlamaMLP, RMSNorm and the rotary functions as they
are; Qwen2Attention is LlamaAttention's constructor with `bias=True` on q, k and v (copied
with a marker, the style rule for a family-specific variant), and the forward passes of the
attention, the block, the backbone and the LM head are LLaMA's functions themselves
(`forward = LlamaAttention.forward`, ...): the biases live inside the Linear layers, so not a
line of them changes. Masks, positions (cumsum of the mask under left padding), the KV cache
of K heads and generation behave exactly as in llama.py.

The checkpoint key map is LLaMA's identity map plus three biases per layer:
model.embed_tokens, model.layers.N.self_attn.{q,k,v}_proj.{weight,bias},
model.layers.N.self_attn.o_proj.weight, model.layers.N.mlp.{gate,up,down}_proj.weight,
model.layers.N.{input,post_attention}_layernorm.weight, model.norm.weight, lm_head.weight
(absent when tied). Qwen2ForSequenceClassification has score.weight instead of lm_head.

GGUF files (llama.cpp's `qwen2` architecture): `Qwen2ForCausalLM.from_gguf(path)` reads them
through llama.py's reader (read_gguf) with the prefix "qwen2." on the metadata keys
("qwen2.block_count", "qwen2.rope.freq_base", ...), LLaMA's tensor names, and the biases
blk.N.attn_q.bias, blk.N.attn_k.bias, blk.N.attn_v.bias. Unlike LLaMA's, the q and k rows
are NOT permuted. llama.cpp rotates LLaMA's adjacent pairs (x[2j], x[2j+1]), so its
converter reorders LLaMA's q/k rows to suit (llama.py's module docstring); but it runs
qwen2 with its NEOX rotation, which pairs x[j] with x[j + D/2] exactly as Hugging Face's
rotate_half does (`llama_model_rope_type` in llama.cpp's src/llama-model.cpp lists
LLM_ARCH_QWEN2 under "the pairs of head values are offset by n_rot/2"), and the converter's
Qwen2Model class (conversion/qwen.py, a TextModel, not a LlamaModel) writes every tensor
as Hugging Face stores it. transformers' own GGUF loader agrees: it reverses the
permutation for llama files only. tests/models/test_qwen2.py writes a file as the converter
does and matches transformers' logits; un-permuting its rows breaks the match.

Parameter counts (num_parameters, equal to transformers' on the meta device):
    qwen2_0_5b     494,032,768    qwen2_5_0_5b    494,032,768
    qwen2_1_5b   1,543,714,304
    qwen2_7b     7,615,616,512    qwen2_5_7b    7,615,616,512

Glossary of shape letters: B batch, T query length, S key length (cached prefix + T),
C model width (hidden_size), H query heads, K key/value heads, D head dim, F feed-forward
width (intermediate_size), V vocabulary, L layers.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from npplm.generation import GenerationMixin
from npplm.layers import Embedding, Linear, Module, RMSNorm, rope_frequencies
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
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
    LlamaPreTrainedModel,
    model_from_gguf,
)
from npplm.models.llama import num_parameters as llama_num_parameters
from npplm.models.llama import read_gguf as llama_read_gguf

# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Qwen2Config:
    """Qwen2's hyperparameters, named as in Hugging Face's config.json (defaults: those of
    transformers' Qwen2Config; the presets below are the published models)."""

    vocab_size: int = 151936  # V: byte-level BPE, padded (152064 from 7B up)
    hidden_size: int = 4096  # C: the residual stream width
    intermediate_size: int = 22016  # F: SwiGLU width
    num_hidden_layers: int = 32  # L: decoder blocks
    num_attention_heads: int = 32  # H: query heads
    num_key_value_heads: int | None = None  # K: key/value heads; None: K = H (no GQA)
    head_dim: int | None = None  # D; None: C / H (every published Qwen2)
    hidden_act: str = "silu"  # the SwiGLU gate (only silu is implemented)
    max_position_embeddings: int = 32768  # longest input (cached prefix included)
    initializer_range: float = 0.02  # std of the normal initialisation of weights
    rms_norm_eps: float = 1e-6
    pad_token_id: int | None = None  # its embedding row starts at 0 and gets no gradient
    bos_token_id: int | None = None  # published configs: 151643, <|endoftext|>
    eos_token_id: int | None = None  # 151643 (base models) or 151645, <|im_end|> (chat)
    tie_word_embeddings: bool = False  # lm_head = embed_tokens: True up to 3B parameters
    num_labels: int = 2  # outputs of Qwen2ForSequenceClassification; 1 for a reward model
    rope_theta: float = 10000.0  # RoPE base: 1,000,000 in every published Qwen2
    use_sliding_window: bool = False  # must stay False: sliding windows are not implemented
    sliding_window: int | None = 4096  # kept as config.json gives it; unused
    max_window_layers: int = 28  # kept as config.json gives it; unused

    def __post_init__(self):
        # Fill the derived defaults (as Hugging Face's Qwen2Config does) in the frozen fields.
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        check_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size",
                            "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                            "max_position_embeddings", "num_labels")
        if self.head_dim is None:
            check_divides(self, "hidden_size", "num_attention_heads")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if not isinstance(self.head_dim, int) or self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"Qwen2Config: head_dim={self.head_dim!r} must be a positive even "
                             "integer (RoPE rotates pairs of dims)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"Qwen2Config: num_attention_heads={self.num_attention_heads} is "
                             f"not divisible by num_key_value_heads={self.num_key_value_heads}"
                             ": each key/value head serves a whole group of query heads")
        if self.hidden_act != "silu":
            raise ValueError(f"Qwen2Config: hidden_act={self.hidden_act!r} is not implemented "
                             "(Qwen2's SwiGLU uses 'silu')")
        if self.use_sliding_window:
            raise ValueError("Qwen2Config: use_sliding_window=True is not implemented (layers "
                             f"from max_window_layers={self.max_window_layers} on would attend "
                             f"to the last sliding_window={self.sliding_window} keys only); "
                             "no published Qwen2 or Qwen2.5 checkpoint sets it")
        if self.sliding_window is not None:
            check_positive_ints(self, "sliding_window")
        if not isinstance(self.max_window_layers, int) or self.max_window_layers < 0:
            raise ValueError(f"Qwen2Config: max_window_layers={self.max_window_layers!r} must "
                             "be a non-negative integer")
        check_scales(self, positive=["rms_norm_eps", "rope_theta"],
                     non_negative=["initializer_range"])
        check_token_ids(self, "pad_token_id", optional=True)

    @property
    def rope_parameters(self):
        """None: Qwen2's RoPE has no frequency scaling (what llama.py's RoPE code reads)."""
        return None

    # Presets: the released config.json files of the base models (the instruct models share
    # their shapes; Qwen2.5's 7B instruct model declares 32768 positions and eos 151645).
    @classmethod
    def qwen2_0_5b(cls, **overrides):
        """Qwen2-0.5B: L=24, C=896, H=14, K=2, F=4864, tied head (494,032,768 parameters)."""
        return cls(**{**dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                             num_attention_heads=14, num_key_value_heads=2,
                             max_position_embeddings=131072, rope_theta=1000000.0,
                             bos_token_id=151643, eos_token_id=151643,
                             tie_word_embeddings=True, sliding_window=131072,
                             max_window_layers=24), **overrides})

    @classmethod
    def qwen2_1_5b(cls, **overrides):
        """Qwen2-1.5B: L=28, C=1536, H=12, K=2, F=8960, tied head (1,543,714,304)."""
        return cls(**{**dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                             num_attention_heads=12, num_key_value_heads=2,
                             max_position_embeddings=131072, rope_theta=1000000.0,
                             bos_token_id=151643, eos_token_id=151643,
                             tie_word_embeddings=True, sliding_window=131072,
                             max_window_layers=28), **overrides})

    @classmethod
    def qwen2_7b(cls, **overrides):
        """Qwen2-7B: V=152064, L=28, C=3584, H=28, K=4, F=18944, untied (7,615,616,512)."""
        return cls(**{**dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                             num_hidden_layers=28, num_attention_heads=28,
                             num_key_value_heads=4, max_position_embeddings=131072,
                             rope_theta=1000000.0, bos_token_id=151643, eos_token_id=151643,
                             sliding_window=131072, max_window_layers=28), **overrides})

    @classmethod
    def qwen2_5_0_5b(cls, **overrides):
        """Qwen2.5-0.5B: Qwen2-0.5B's shape with 32768 positions (494,032,768)."""
        return cls.qwen2_0_5b(**{**dict(max_position_embeddings=32768, sliding_window=32768),
                                 **overrides})

    @classmethod
    def qwen2_5_7b(cls, **overrides):
        """Qwen2.5-7B: Qwen2-7B's shape and 131072 positions (7,615,616,512)."""
        return cls.qwen2_7b(**overrides)

    @classmethod
    def tiny(cls, **overrides):
        """A few thousand parameters for tests: H=4 query heads sharing K=2 key/value heads
        (GQA), D=8, theta 1e6 as published; the widths differ (F=37) so that a mixed-up
        axis fails loudly."""
        return cls(**{**dict(vocab_size=64, hidden_size=32, intermediate_size=37,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=64, rope_theta=1000000.0,
                             sliding_window=64, max_window_layers=2), **overrides})

    # Hugging Face's config.json in and out.
    @classmethod
    def from_hf(cls, hf):
        """From a Hugging Face config dict (transformers 4.x `rope_theta` or 5.x
        `rope_parameters`); keys Qwen2 does not use are ignored. Refuses what this file does
        not implement: sliding windows, attention dropout, RoPE scaling."""
        if hf.get("model_type", "qwen2") != "qwen2":
            raise ValueError(f"Qwen2Config.from_hf: model_type {hf['model_type']!r} is not "
                             "qwen2")
        if hf.get("attention_dropout"):
            raise ValueError("Qwen2Config.from_hf: attention_dropout="
                             f"{hf['attention_dropout']} is not implemented (must be 0)")
        if "sliding_attention" in (hf.get("layer_types") or ()):
            raise ValueError("Qwen2Config.from_hf: layer_types has sliding_attention layers; "
                             "sliding-window attention is not implemented")
        names = {f.name for f in dataclasses.fields(cls)} - {"rope_theta"}
        kwargs = {k: v for k, v in hf.items() if k in names}
        kwargs["num_labels"] = num_labels_from_hf(hf)
        if isinstance(kwargs.get("eos_token_id"), list):  # some chat configs list several
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        for key in ("rope_parameters", "rope_scaling"):  # 5.x and 4.x spellings
            rope = hf.get(key) or {}
            rope_type = rope.get("rope_type", rope.get("type", "default"))
            if rope_type != "default":
                raise ValueError(f"Qwen2Config.from_hf: rope scaling {rope_type!r} is not "
                                 "implemented")
        rope = hf.get("rope_parameters") or {}
        kwargs["rope_theta"] = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
        return cls(**kwargs)

    def to_hf(self):
        """A Hugging Face config dict (model_type "qwen2"), in transformers 5's rope format."""
        hf = dataclasses.asdict(self)
        hf.update(num_labels_to_hf(hf.pop("num_labels")))
        hf["rope_parameters"] = {"rope_type": "default", "rope_theta": hf.pop("rope_theta")}
        hf.update(model_type="qwen2", attention_dropout=0.0)
        return hf


def num_parameters(config, with_lm_head=True):
    """Parameters of Qwen2ForCausalLM (Qwen2Model: with_lm_head=False), from the config alone:
    LLaMA's count (llama.num_parameters) plus the q, k and v biases, (H + 2K) D per layer.

        qwen2_0_5b  494,032,768    qwen2_1_5b  1,543,714,304    qwen2_7b  7,615,616,512
    """
    H, K, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    biases = config.num_hidden_layers * (H + 2 * K) * D
    return llama_num_parameters(config, with_lm_head) + biases


# --- building blocks ------------------------------------------------------------------------


class Qwen2Attention(Module):
    """LLaMA's causal grouped-query attention with biased q, k, v projections:
        q = rope(x W_q^T + b_q) (H heads), k = rope(x W_k^T + b_k), v = x W_v^T + b_v (K heads),
        y = W_o softmax(q k^T / sqrt(D) + causal and padding bias) v      (no bias on W_o).
    """

    # Adapted from npplm.models.llama.LlamaAttention: bias=True on q_proj, k_proj, v_proj.
    def __init__(self, config, rng):
        C, D, std = config.hidden_size, config.head_dim, config.initializer_range
        self.n_heads, self.n_kv_heads, self.head_dim = (config.num_attention_heads,
                                                        config.num_key_value_heads, D)
        self.q_proj = Linear(C, self.n_heads * D, bias=True, std=std, rng=rng)  # b_q (H D,)
        self.k_proj = Linear(C, self.n_kv_heads * D, bias=True, std=std, rng=rng)  # (K D,)
        self.v_proj = Linear(C, self.n_kv_heads * D, bias=True, std=std, rng=rng)  # (K D,)
        self.o_proj = Linear(self.n_heads * D, C, bias=False, std=std, rng=rng)

    # The forward pass is LLaMA's, line for line: project (each Linear adds its bias), split
    # heads (B, T, C) -> (B, H or K, T, D), rotate q and k, extend the cache, repeat the K
    # heads to H, attend, merge heads and project back to (B, T, C).
    forward = LlamaAttention.forward


class Qwen2DecoderLayer(Module):
    """One block, pre-norm:  x = x + Attention(RMSNorm(x));  x = x + MLP(RMSNorm(x))."""

    def __init__(self, config, rng):
        self.self_attn = Qwen2Attention(config, rng)
        self.mlp = LlamaMLP(config, rng)  # SwiGLU, no biases
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    forward = LlamaDecoderLayer.forward


# --- the backbone ---------------------------------------------------------------------------


class Qwen2PreTrainedModel(LlamaPreTrainedModel):
    """What every Qwen2 class shares: LLaMA's (backbone name "model", ignored rotary buffers,
    a KV cache of K heads) with Qwen2's config class."""

    config_class = Qwen2Config


class Qwen2Model(Qwen2PreTrainedModel):
    """The decoder: ids (B, T) -> last_hidden_state (B, T, C), after the final RMSNorm.

    forward(input_ids, attention_mask=None, cache=None, position_ids=None) is LlamaModel's
    (see it for the arguments): the embedding, the blocks, the final norm; positions from
    the mask under left padding, or from the cache's length.
    """

    def __init__(self, config, seed=0, rng=None):
        rng = np.random.default_rng(seed) if rng is None else rng
        self.config = config
        # nn.Embedding(V, C, padding_idx=pad_token_id) in Hugging Face: the pad row starts at
        # zero and gets no gradient. Published Qwen2 configs have no pad token (None).
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size,
                                      std=config.initializer_range, rng=rng, what="token id",
                                      padding_idx=config.pad_token_id)
        self.layers = [Qwen2DecoderLayer(config, rng) for _ in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        # The RoPE frequencies depend on the config only: computed once, (D/2,) float64.
        self.rope_frequencies = rope_frequencies(config.head_dim, config.rope_theta,
                                                 config.rope_parameters)

    forward = LlamaModel.forward
    layer_inputs = LlamaModel.layer_inputs


class Qwen2ForCausalLM(Qwen2PreTrainedModel, GenerationMixin):
    """The language model: logits (B, T, V) for the next token at every position.

    forward(input_ids, attention_mask=None, labels=None, cache=None, position_ids=None) is
    LlamaForCausalLM's: labels (B, T) are the input ids themselves (-100 where ignored),
    position t's logits scored against labels[t + 1]. Generation (npplm.generation) with a
    KVCache of the K key/value heads, as LLaMA's. `from_gguf(path)` reads a llama.cpp file
    of the qwen2 architecture (see the module docstring).
    """

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.model = Qwen2Model(config, rng=rng)
        if config.tie_word_embeddings:
            self.lm_head = Linear.tied(self.model.embed_tokens.weight)  # the (V, C) table
        else:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False,
                                  std=config.initializer_range, rng=rng)

    @classmethod
    def from_gguf(cls, path, dequantize=False, activations="float32"):
        """The model of a qwen2-architecture GGUF file, in eval mode, its block-quantised
        weights kept so unless dequantize=True (llama.model_from_gguf)."""
        return model_from_gguf(cls, path, dequantize, activations, **GGUF_LAYOUT)

    forward = LlamaForCausalLM.forward


class Qwen2ForSequenceClassification(SequenceClassifierMixin, Qwen2PreTrainedModel):
    """Qwen2 with a linear score on its last real token: a classifier, or (num_labels = 1) a
    reward model, as llama.py's LlamaForSequenceClassification (base.SequenceClassifierMixin
    holds the forward, the pooling rule and `from_backbone`).

    Keys as Hugging Face's Qwen2ForSequenceClassification: model.*, score.weight
    (num_labels, C), no bias.
    """

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.model = Qwen2Model(config, rng=rng)
        self.score = Linear(config.hidden_size, config.num_labels, bias=False,
                            std=config.initializer_range, rng=rng)  # (num_labels, C)


# --- GGUF files (llama.cpp) -------------------------------------------------------------------

# How llama.py's GGUF reader reads a qwen2 file: metadata under "qwen2.", a Qwen2Config, the
# q/k/v biases (blk.N.attn_q.bias, ...), and q/k rows in Hugging Face's order (no rotary
# permutation: llama.cpp rotates qwen2's halves, as Hugging Face does; module docstring).
GGUF_LAYOUT = dict(arch="qwen2", config_class=Qwen2Config,
                   biases=("attn_q", "attn_k", "attn_v"), permuted=False)


def read_gguf(path):
    """(Qwen2Config, {Hugging Face key: float32 array}) from a qwen2 GGUF file."""
    return llama_read_gguf(path, **GGUF_LAYOUT)
