"""GLM: one decoder stack that fills blanks autoregressively, so it both understands and writes.

Papers: Du, Qian, Liu, Ding, Qiu, Yang and Tang, "GLM: General Language Model Pretraining
with Autoregressive Blank Infilling" (ACL 2022), arXiv:2103.10360 (GLM, 2021); Zeng et al.,
"GLM-130B: An Open Bilingual Pre-trained Model" (ICLR 2023), arXiv:2210.02414 (GLM-130B,
section 2 and appendix); Wang et al., "DeepNet: Scaling Transformers to 1,000 Layers",
arXiv:2203.00555 (DeepNorm). Reference code: THUDM/GLM (`blocklm_utils.py`, the model in
`model/modeling_glm.py`), THUDM/GLM-130B (`generate.py`, `configs/model_glm_130b.sh`) and
SwissArmyTransformer's `sat/model/official/glm130B_model.py`, the model GLM-130B runs. None
of it runs here (CUDA, Megatron); transformers has no class for either, so this file is tested
by properties (tests/models/test_glm.py: the mask's invariants, cached infilling against
recomputation, exact gradient scaling, finite differences) and against a float64 PyTorch
transcription of glm130B_model.py (tests/models/test_glm130b.py: logits and every gradient).

Which GLM a configuration reproduces (the switches are GLMConfig fields):

    GLMConfig.base() / large()   GLM (2021) trained with GLM-130B's stability recipe, as the
        source describes GLM: post-LN with DeepNorm (DeepNet's decoder-only constants, the
        table the source prints), learned 2D positions, GELU, an optional embedding
        gradient shrink. The released GLM-Base/Large/10B are pre-LN Megatron stacks
        (layernorm_position="pre", deepnorm=False gives that shape, GLM-10B's names).
    GLMConfig.glm_130b()         GLM-130B as its code runs it: post-LN DeepNorm with
        GLM-130B's constants (alpha = (2N)^(1/2) in glm130B_model.py; init gain (2N)^(-1/2),
        paper section 2.1), the embedding LayerNorm, RoPE, GeGLU, the gradient shrink 0.1.
        glm_130b_tiny() is the same recipe at a laptop's width (`npplm train --model glm
        --preset glm_130b_tiny`).
    ChatGLM / GLM-4 are another architecture (RMSNorm, SwiGLU, grouped-query attention,
    plain causal decoding): npplm/models/chatglm.py, transformers' model type "glm".

What differs from the reference code, switch by switch:
  - DeepNorm's constants. deepnorm_constants="deepnet" (default, the source's table):
    alpha = (2N)^(1/4), beta = (8N)^(-1/4); "glm-130b": alpha = (2N)^(1/2), beta = (2N)^(-1/2).
    At N = 70: 3.44 / 0.206 against 11.83 / 0.085.
  - Where the LayerNorms sit. SAT's GLM-130B layer normalises its input (input_layernorm)
    and after the attention residual (post_attention_layernorm), and the stack ends with a
    final_layernorm. Ours ends each block with post_mlp_layernorm instead: the same
    LayerNorms, counted differently (layer i's input_layernorm is our layer i - 1's
    post_mlp_layernorm, the final one our last layer's), except for layer 0's, which
    normalises the embeddings: `embedding_layernorm=True` adds it (GLM-130B), False feeds
    the raw embeddings (std 0.02) into the first alpha-scaled residual (our 2021 GLM).
  - Positions. position_encoding="learned": GLM's two learned tables (2021).
    "rotary": RoPE on one position row, the first row of position_ids (the block row is
    not read), as GLM-130B's released config runs (it does not set SAT's
    --position-encoding-2d; the source notes that GLM-130B dropped the 2D encoding). Its
    generate.py keeps every token of a [MASK] blank at the mask's position and numbers a
    [gMASK] continuation on (0, 1, 2, ... through the whole sequence): `fill_blank` and
    `blank_infilling_inputs(count_on=True)` do the same. "rotary_2d": SAT's
    position_encoding_2d (ChatGLM-6B's), the first half of each head's dims rotated by the
    position row and the second by the block row, each half as its own RoPE head.
  - The feed-forward. hidden_act="geglu": dense_h_to_4h is C -> 2F, x1 * GELU(x2) of its
    halves (the second half gates: SAT's GEGLU), F = 8/3 C unless set (32,768 at 130B).
  - query_key_value's rows. SAT lays the fused weight out head by head (q, k, v of head 0,
    then of head 1, ...); ours, as GLM (2021), as the Q, K and V blocks. A converter of
    GLM-130B's checkpoint would permute the rows (the test's `sat_names` shows how).
  - Attention arithmetic. SAT divides q by sqrt(D) (layer + 1) and multiplies the scores by
    (layer + 1) in float32 before softmax (an fp16 overflow guard, the identity in exact
    arithmetic) and fills masked scores with -10000; we scale once and mask with -inf.
  - Initialisation. SAT's code loads weights (skip_init); ours follows the paper: Xavier
    normal, gain beta on the value, output and both feed-forward weights (the GeGLU
    C -> 2F matrix as one), gain 1 on queries and keys, embeddings N(0, 0.02^2).

Blank infilling, the pre-training task. From x = [x1 .. x6] sample spans, say {x3} and
{x5, x6}. Part A is x with each span replaced by one [MASK]; Part B is the spans, each
opened by [S] (start, "sop") and, as a target, closed by [E] (end, "eop"), in a random order:

    input    x1 x2 [M] x4 [M] | [S] x5 x6 [S] x3        Part A | Part B
    target    -  -   -  -   - |  x5 x6 [E] x3 [E]       loss on Part B only
    position  0  1   2  3   4 |  4  4  4  2  2          where the span's [MASK] sits in A
    block     0  0   0  0   0 |  1  2  3  1  2          position inside the span, 0 in A

The two position rows are the "2D positional encoding": the model never learns a span's
length from its positions in A (one [MASK] per span, whatever its length), and inside the
span it counts tokens from [S]. The attention mask (figure 2 of the paper):

    Part A sees all of Part A (bidirectional, BERT-like) and none of Part B;
    Part B sees all of Part A and the earlier tokens of Part B (causal, GPT-like).

One rule does all three, for query i and key j with Part A of length `sep`:
    j may be seen by i  <=>  j < sep  or  j <= i.
[MASK] asks for a short blank inside the text; [gMASK] ("generation mask") is a single blank
at the end of Part A for long continuations. Both are filled the same way: feed [S], then
each sampled token, until [E] (`fill_blank` below).

The model, for ids (B, T) and positions (B, 2, T):
    h = shrink(E_word[ids]) + E_pos[positions[:, 0]] + E_block[positions[:, 1]]   (B, T, C)
        (rotary positions: h = shrink(E_word[ids]); then h = LN_0(h) with the embedding
        LayerNorm)
    repeat L times (post-LN with DeepNorm):
        h = LN_1(alpha h + Attention(h))      blank-infilling mask above (RoPE on q, k)
        h = LN_2(alpha h + MLP(h))            MLP(x) = W_2 GELU(W_1 x), F = 4 C
                                              (GeGLU: W_2 (x1 * GELU(x2)), [x1, x2] = W_1 x)
    logits = h @ E_word^T                                   (B, T, V), the table tied
Training minimises the cross-entropy of each Part B target given its input (no shift: the
targets are already one step ahead, as in the table above).

What is different from GPT-2:
  - Post-LN, as the original Transformer, with DeepNorm: the residual is multiplied by
    alpha = (2N)^(1/4) before LayerNorm, and the value, output and feed-forward weights are
    Xavier-initialised with gain beta = (8N)^(-1/4) (DeepNet table 1, decoder-only row, N
    layers; queries and keys keep gain 1; GLM-130B's own constants above). `deepnorm=False`
    gives plain post-LN (alpha = beta = 1). No final LayerNorm: every block already ends
    with one.
    (layernorm_position="pre" gives GLM-10B's pre-LN with a final LayerNorm instead,
    which the stability experiment, benchmarks/glm_stability.py, compares.)
  - GeLU (exact, erf) rather than GPT-2's tanh approximation.
  - A single linear output layer tied to the word embeddings (no extra MLP head).
  - 2D positions, two learned tables, instead of one (GLM-130B: RoPE, no table).
  - The blank-infilling mask instead of the causal one.
  - Embedding gradient shrink (GLM-130B): the word embedding's lookup passes its value
    unchanged but only `embedding_grad_scale` of its gradient (npplm.layers.grad_scale).
    The output layer's use of the same table is not shrunk.

Parameter names follow THUDM's GLM checkpoint keys (transformer.word_embeddings,
transformer.position_embeddings, transformer.block_position_embeddings,
transformer.layers.N.attention.query_key_value, attention.dense, mlp.dense_h_to_4h,
mlp.dense_4h_to_h). Their LayerNorms sit elsewhere (GLM-10B is pre-LN, Megatron-style), so
ours are named for where post-LN puts them: post_attention_layernorm, post_mlp_layernorm,
and GLM-130B's first one transformer.embedding_layernorm.
No checkpoint format is defined here: the released GLM weights are not pre-LN-compatible
with this post-LN/DeepNorm model, and transformers has no GLM-1 class.

Glossary of shape letters: B batch, T query length (new tokens), S key length (cached +
new), C model width (hidden_size), H heads, D head dim (C / H), F feed-forward width, V
vocabulary, L layers (N in DeepNet's formulas).
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from autograd import Tensor, array_module, as_array, concatenate, no_grad, split, to_numpy
from npplm.generation import decode
from npplm.layers import (
    IGNORE_INDEX,
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    additive_mask,
    apply_rotary,
    attention,
    cross_entropy,
    gelu,
    grad_scale,
    int_array,
    merge_heads,
    rope_cos_sin,
    rope_frequencies,
    run_block,
    split_heads,
)
from npplm.models.base import (
    PreTrainedModel,
    check_divides,
    check_optional_positive_int,
    check_positive_ints,
    check_probabilities,
    check_scales,
    check_token_ids,
)
from npplm.models.output import ModelOutput

# --- configuration -------------------------------------------------------------------------


MODEL_TYPE = "npplm-glm"  # config.json's model_type (see GLMConfig.to_hf)
DEEPNORM_CONSTANTS = ("deepnet", "glm-130b")
POSITION_ENCODINGS = ("learned", "rotary", "rotary_2d")
ACTIVATIONS = ("gelu", "geglu")


@dataclass(frozen=True)
class GLMConfig:
    """GLM hyperparameters, named as in THUDM's GLM `config.json`.

    Defaults: GLM-Large (335M). Special token ids default to the end of the vocabulary
    (THUDM appends them to the tokenizer); set them to your tokenizer's ids.
    """

    vocab_size: int = 30592  # V: BERT's WordPiece (30,522) plus GLM's tokens, padded
    max_sequence_length: int = 512  # rows of each position table
    hidden_size: int = 1024  # C
    num_layers: int = 24  # L (DeepNorm's N)
    num_attention_heads: int = 16  # H; D = C / H
    intermediate_size: int | None = None  # F; None: 4 C (every published size)
    embedding_dropout_prob: float = 0.1  # on the summed embeddings
    attention_dropout_prob: float = 0.1  # on the attention probabilities
    output_dropout_prob: float = 0.1  # on each sublayer's output, before the residual
    layernorm_epsilon: float = 1e-5
    initializer_range: float = 0.02  # std of the embedding tables
    deepnorm: bool = True  # alpha, beta from DeepNet; False: plain post-LN (both 1)
    # "post" (GLM-130B's, with DeepNorm) or "pre" (GLM-10B's, Megatron's: LN before each
    # sublayer, a final LN after the stack; names input_layernorm, post_attention_layernorm,
    # final_layernorm as in THUDM's checkpoints); the stability experiment compares them
    layernorm_position: str = "post"
    # GLM-130B's embedding gradient shrink; 1.0 (none) for the original GLM sizes, 0.1 in
    # GLM-130B. Only the gradient of the word-embedding lookup is scaled.
    embedding_grad_scale: float = 1.0
    # Which DeepNorm constants (see deepnorm_alpha / deepnorm_beta): "deepnet" (DeepNet's
    # table 1, decoder-only row, which the source prints) or "glm-130b" (GLM-130B's paper
    # and code: alpha = (2N)^(1/2), init gain (2N)^(-1/2))
    deepnorm_constants: str = "deepnet"
    # GLM-130B normalises the embeddings before the first layer (its layer 0's
    # input_layernorm); GLM-1's post-LN stack as written here feeds them in raw
    embedding_layernorm: bool = False
    # "learned": GLM's two position tables (2021); "rotary": GLM-130B's RoPE on one
    # position row (its released config); "rotary_2d": RoPE on both rows, the first half
    # of each head's dims by position, the second by block position (SwissArmyTransformer's
    # position_encoding_2d, as ChatGLM-6B runs)
    position_encoding: str = "learned"
    rope_theta: float = 10000.0  # RoPE's base (10,000 in every GLM)
    hidden_act: str = "gelu"  # "gelu" (GLM) or "geglu" (GLM-130B: x1 * gelu(x2), F wide)
    pad_token_id: int = 0
    mask_token_id: int = 30588  # [MASK]: a short blank inside the text
    gmask_token_id: int = 30589  # [gMASK]: one long blank at the end of Part A
    sop_token_id: int = 30590  # [S]: starts each span in Part B
    eop_token_id: int = 30591  # [E]: the last target of each span

    def __post_init__(self):
        check_positive_ints(self, "vocab_size", "max_sequence_length", "hidden_size",
                            "num_layers", "num_attention_heads")
        check_optional_positive_int(self, "intermediate_size")
        check_divides(self, "hidden_size", "num_attention_heads")
        check_probabilities(self, "embedding_dropout_prob", "attention_dropout_prob",
                            "output_dropout_prob")
        check_scales(self, positive=["layernorm_epsilon"], non_negative=["initializer_range"])
        if self.layernorm_position not in ("post", "pre"):
            raise ValueError(f"GLMConfig.layernorm_position={self.layernorm_position!r}; use "
                             "'post' or 'pre'")
        if self.layernorm_position == "pre" and self.deepnorm:
            raise ValueError("GLMConfig: DeepNorm scales a post-LN residual; with "
                             "layernorm_position='pre' set deepnorm=False")
        if not 0.0 < self.embedding_grad_scale <= 1.0:
            raise ValueError(f"GLMConfig.embedding_grad_scale={self.embedding_grad_scale} "
                             "must be in (0, 1]")
        check_token_ids(self, "pad_token_id", "mask_token_id", "gmask_token_id",
                        "sop_token_id", "eop_token_id")
        for name, allowed in (("deepnorm_constants", DEEPNORM_CONSTANTS),
                              ("position_encoding", POSITION_ENCODINGS),
                              ("hidden_act", ACTIVATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GLMConfig.{name}={getattr(self, name)!r}; use one of "
                                 f"{', '.join(map(repr, allowed))}")
        if self.embedding_layernorm and self.layernorm_position != "post":
            raise ValueError("GLMConfig.embedding_layernorm is GLM-130B's post-LN stack's "
                             "first LayerNorm; pre-LN normalises each sublayer's input already")
        # RoPE rotates pairs of dims: the head (rotary) or each half of it (rotary_2d)
        pairs = {"rotary": 2, "rotary_2d": 4}.get(self.position_encoding, 1)
        if self.head_dim % pairs:
            raise ValueError(f"GLMConfig: position_encoding={self.position_encoding!r} needs "
                             f"a head dim divisible by {pairs}, got {self.head_dim}")
        check_scales(self, positive=["rope_theta"])

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads  # D

    @property
    def inner_dim(self):
        """F: 4 C for GELU; 8/3 C (rounded down) for GeGLU, SwissArmyTransformer's default,
        whose two F-wide halves keep the parameter count of a 4 C GELU MLP."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        return 4 * self.hidden_size * 2 // 3 if self.hidden_act == "geglu" else \
            4 * self.hidden_size

    @property
    def deepnorm_alpha(self):
        """Residual multiplier: (2N)^(1/4) in DeepNet's decoder-only row (table 1);
        (2N)^(1/2) in GLM-130B (paper section 2.1; SwissArmyTransformer's glm130B_model.py,
        `alpha = (2 * self.num_layers) ** 0.5`). At N = 70: 3.44 and 11.83."""
        if not self.deepnorm:
            return 1.0
        return (2 * self.num_layers) ** (0.5 if self.deepnorm_constants == "glm-130b" else 0.25)

    @property
    def deepnorm_beta(self):
        """Init gain of the value, output and feed-forward weights: (8N)^(-1/4) in DeepNet's
        table; (2N)^(-1/2) in GLM-130B (paper section 2.1). At N = 70: 0.206 and 0.085."""
        if not self.deepnorm:
            return 1.0
        if self.deepnorm_constants == "glm-130b":
            return (2 * self.num_layers) ** -0.5
        return (8 * self.num_layers) ** -0.25

    # Presets: table 1 of the paper (GLM-Base and GLM-Large use BERT's WordPiece
    # vocabulary, GLM-10B GPT-2's BPE; vocabulary and context sizes as in THUDM's released
    # configs). Exact counts are in `num_parameters`.
    @classmethod
    def base(cls, **overrides):
        """GLM-Base: L=12, C=768, H=12 (110M)."""
        return cls(**{**dict(hidden_size=768, num_layers=12, num_attention_heads=12),
                      **overrides})

    @classmethod
    def large(cls, **overrides):
        """GLM-Large: L=24, C=1024, H=16 (335M)."""
        return cls(**overrides)

    @classmethod
    def glm_10b(cls, **overrides):
        """GLM-10B: L=48, C=4096, H=64, GPT-2's BPE padded to 50,304, 1,024 positions."""
        return cls(**{**dict(vocab_size=50304, max_sequence_length=1024, hidden_size=4096,
                             num_layers=48, num_attention_heads=64, pad_token_id=50256,
                             mask_token_id=50260, gmask_token_id=50263,
                             sop_token_id=50258, eop_token_id=50259), **overrides})

    @classmethod
    def glm_130b(cls, **overrides):
        """GLM-130B (Zeng et al. 2022, table 11; THUDM/GLM-130B configs/model_glm_130b.sh):
        L=70, C=12288, H=96, F=32768 GeGLU, icetk's 150,528 tokens, 2,048 positions; post-LN
        with GLM-130B's DeepNorm, the embedding LayerNorm, rotary positions (one row), the
        embedding gradient shrink 0.1. Special ids: icetk-glm-130B's [MASK] 150000,
        [gMASK] 150001, sop 150004, eop 150005, pad = eop (its tokenizer has no pad)."""
        return cls(**{**dict(vocab_size=150528, max_sequence_length=2048, hidden_size=12288,
                             num_layers=70, num_attention_heads=96, intermediate_size=32768,
                             deepnorm_constants="glm-130b", embedding_layernorm=True,
                             position_encoding="rotary", hidden_act="geglu",
                             embedding_grad_scale=0.1, pad_token_id=150005,
                             mask_token_id=150000, gmask_token_id=150001,
                             sop_token_id=150004, eop_token_id=150005), **overrides})

    @classmethod
    def glm_130b_tiny(cls, **overrides):
        """GLM-130B's recipe (glm_130b's switches) at a laptop's width: L=4, C=128, H=4,
        F=341 GeGLU (8/3 C). Its DeepNorm constants are those of 4 layers, as the recipe's
        are (alpha = sqrt(2N) = 2.83)."""
        return cls.glm_130b(**{**dict(vocab_size=30592, max_sequence_length=512,
                                      hidden_size=128, num_layers=4, num_attention_heads=4,
                                      intermediate_size=None), **overrides})

    @classmethod
    def tiny(cls, **overrides):
        """A few thousand parameters for tests; F=37 so a mixed-up axis fails loudly."""
        return cls(**{**dict(vocab_size=48, max_sequence_length=32, hidden_size=32,
                             num_layers=2, num_attention_heads=4, intermediate_size=37,
                             pad_token_id=0, mask_token_id=44, gmask_token_id=45,
                             sop_token_id=46, eop_token_id=47), **overrides})

    # config.json in and out. transformers has no class for the 2021 GLM (THUDM shipped it
    # as remote code), and its own model_type "glm" is the unrelated GLM-4: the file holds
    # these fields (THUDM's names) and a model_type of our own, MODEL_TYPE, so that
    # transformers refuses it by name instead of misreading it. npplm reads both.
    @classmethod
    def from_hf(cls, hf):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf.items() if k in names})

    def to_hf(self):
        return {**dataclasses.asdict(self), "model_type": MODEL_TYPE}


def num_parameters(config):
    """Parameters of a GLM for `config`, from the config alone (nothing allocated).

    Embeddings: V C words, and with learned positions 2 max_sequence_length C more
    (positions, block positions); RoPE has no parameters. Each layer: query_key_value
    C 3C + 3C, dense C^2 + C, dense_h_to_4h C F + F (GeGLU: C 2F + 2F), dense_4h_to_h F C + C,
    two LayerNorms 4C; with F = 4C that is 12 C^2 + 13 C. The output layer adds nothing
    (tied); post-LN has no final LayerNorm, pre-LN one (2C), and GLM-130B's embedding
    LayerNorm adds 2C.

        GLMConfig.base()           109,335,552  "110M"
        GLMConfig.large()          334,684,160  "335M"
        GLMConfig.glm_10b()      9,880,666,112  "10B"
        GLMConfig.glm_130b()   128,697,794,560  "130B"
    """
    C, F = config.hidden_size, config.inner_dim
    positions = 2 * config.max_sequence_length if config.position_encoding == "learned" else 0
    embeddings = (config.vocab_size + positions) * C
    up = 2 * F if config.hidden_act == "geglu" else F  # dense_h_to_4h's outputs
    layer = (C * 3 * C + 3 * C) + (C * C + C) + (C * up + up) + (F * C + C) + 2 * 2 * C
    extra = 2 * C * ((config.layernorm_position == "pre") + config.embedding_layernorm)
    return embeddings + config.num_layers * layer + extra


# --- the blank-infilling layout --------------------------------------------------------------


def blank_infilling_mask(sep, T, past=0):
    """Which keys each query may see: (B, T, S) booleans, S = past + T.

    Query i (absolute position past + t) sees key j iff j < sep or j <= i: Part A
    (positions < sep) is seen by everyone, Part B only causally, and a Part A query
    (i < sep) therefore sees exactly Part A. `sep` (B,) is each row's Part A length.
    """
    sep = np.asarray(sep).reshape(-1, 1, 1)  # (B,) -> (B, 1, 1)
    S = past + T
    query = np.arange(past, S)[:, None]  # (T, 1) absolute positions
    key = np.arange(S)[None, :]  # (1, S)
    return (key < sep) | (key <= query)  # (B, T, S)


def blank_infilling_inputs(tokens, spans, *, mask_token_id, sop_token_id, eop_token_id,
                           count_on=False):
    """Part A / Part B, 2D positions and targets from a sequence and its blanks (section 2.1).

    tokens  a sequence of ids, x_1 .. x_n
    spans   (start, end) pairs, half-open indices into tokens, not overlapping, not empty;
            Part B takes them in the order given (shuffle the list for the paper's random
            order). Part A replaces each by one mask_token_id ([MASK], or [gMASK] for one
            span reaching the end).
    Returns a dict of NumPy int64 arrays:
        input_ids     (T,)   Part A, then [S] + span for each span
        position_ids  (2, T) row 0: position in Part A (a span takes its [MASK]'s);
                             row 1: 0 in Part A, 1.. inside a span ([S] is 1)
        labels        (T,)   IGNORE_INDEX on Part A, span + [E] on each span's inputs
        sep           ()     the length of Part A
    count_on=True makes row 0 of Part B count on from the span's mask, p + 1, p + 2, ...
    (p + the block position): GLM-130B's one-row positions for a [gMASK] continuation
    (THUDM/GLM-130B generate.py, `get_masks_and_position_ids` with gmask=True numbers the
    whole sequence 0, 1, 2, ...; for [MASK] it keeps every generated token at the mask's
    position, which is row 0 as it is). Only rotary position_encoding reads row 0 alone.
    """
    tokens = [int(t) for t in tokens]
    n = len(tokens)
    ordered = sorted(spans)
    for (s, e), nxt in zip(ordered, ordered[1:] + [(n, n)]):
        if not 0 <= s < e <= n:
            raise ValueError(f"span ({s}, {e}) must satisfy 0 <= start < end <= {n} (the "
                             "sequence length)")
        if e > nxt[0]:
            raise ValueError(f"spans ({s}, {e}) and {nxt} overlap")
    # Part A, left to right, remembering where each span's [MASK] lands.
    part_a, mask_position, cursor = [], {}, 0
    for s, e in ordered:
        part_a += tokens[cursor:s]
        mask_position[(s, e)] = len(part_a)
        part_a.append(mask_token_id)
        cursor = e
    part_a += tokens[cursor:]
    sep = len(part_a)
    ids, pos, block = list(part_a), list(range(sep)), [0] * sep
    labels = [IGNORE_INDEX] * sep
    for s, e in spans:
        span = tokens[s:e]
        ids += [sop_token_id] + span  # inputs:  [S] x_s .. x_{e-1}
        labels += span + [eop_token_id]  # targets: x_s .. x_{e-1} [E]
        inside = list(range(1, len(span) + 2))  # [S] is 1
        pos += [mask_position[(s, e)] + (b if count_on else 0) for b in inside]
        block += inside
    return dict(input_ids=np.array(ids, dtype=np.int64),
                position_ids=np.array([pos, block], dtype=np.int64),  # (2, T)
                labels=np.array(labels, dtype=np.int64), sep=np.int64(sep))


# --- building blocks -----------------------------------------------------------------------


def _xavier_std(fan_in, fan_out, gain=1.0):
    """Xavier (Glorot) normal: std = gain sqrt(2 / (fan_in + fan_out))."""
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


class GLMAttention(Module):
    """Multi-head self-attention under the blank-infilling mask: one fused Q/K/V projection
    (query_key_value) and the output projection (dense)."""

    def __init__(self, config, rng):
        C, beta = config.hidden_size, config.deepnorm_beta
        self.n_head = config.num_attention_heads
        # DeepNorm: W_q, W_k Xavier with gain 1; W_v (and W_o below) with gain beta. The
        # fused (3C, C) weight holds W_q, W_k, W_v as row blocks: scale the last.
        self.query_key_value = Linear(C, 3 * C, std=_xavier_std(C, C), rng=rng)
        self.query_key_value.weight.data[2 * C:] *= beta
        self.dense = Linear(C, C, std=_xavier_std(C, C, beta), rng=rng)
        self.attention_dropout = Dropout(config.attention_dropout_prob, rng)
        self.output_dropout = Dropout(config.output_dropout_prob, rng)

    def forward(self, x, bias, rotary=(), cache=None, layer=0):
        """rotary: () for learned positions; ((cos, sin),) to rotate the whole head
        (GLM-130B); ((cos, sin), (cos, sin)) to rotate its first half by position and its
        second half by block position (rotary_2d). Tables (B, T, D / len(rotary))."""
        q, k, v = split(self.query_key_value(x), sections=3, axis=-1)  # 3 x (B, T, C)
        q = split_heads(q, self.n_head)  # (B, T, C) -> (B, H, T, D)
        k = split_heads(k, self.n_head)  # (B, T, C) -> (B, H, T, D)
        v = split_heads(v, self.n_head)  # (B, T, C) -> (B, H, T, D)
        if rotary:  # keys are rotated before they are cached, as in LLaMA
            q, k = rotate(q, rotary), rotate(k, rotary)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # -> (B, H, S, D), constants: no gradient
            k, v = Tensor(k), Tensor(v)
        y = attention(q, k, v, bias=bias, dropout=self.attention_dropout)  # (B, H, T, D)
        y = merge_heads(y)  # (B, H, T, D) -> (B, T, C)
        return self.output_dropout(self.dense(y))


def rotate(x, rotary):
    """RoPE on (B, H, T, D) queries or keys: the whole head by one table pair, or (2D) the
    first D/2 dims by the first pair and the last D/2 by the second, each half rotated as
    its own head (SwissArmyTransformer's `position_encoding_2d`: q1, q2 = q.chunk(2))."""
    if len(rotary) == 1:
        return apply_rotary(x, *rotary[0])  # (B, H, T, D)
    halves = split(x, sections=2, axis=-1)  # 2 x (B, H, T, D/2)
    return concatenate(*(apply_rotary(h, cos, sin) for h, (cos, sin) in zip(halves, rotary)),
                       axis=-1)  # -> (B, H, T, D)


class GLMMLP(Module):
    """dense_4h_to_h(GELU(dense_h_to_4h(x))), C -> F -> C, both Xavier with gain beta.
    GeGLU (GLM-130B): dense_h_to_4h is C -> 2F, its output halves [x1, x2], and
    dense_4h_to_h(x1 * GELU(x2)) (SwissArmyTransformer's GEGLU: the second half is the gate)."""

    def __init__(self, config, rng):
        C, F, beta = config.hidden_size, config.inner_dim, config.deepnorm_beta
        self.glu = config.hidden_act == "geglu"
        wide = 2 * F if self.glu else F
        self.dense_h_to_4h = Linear(C, wide, std=_xavier_std(C, wide, beta), rng=rng)
        self.dense_4h_to_h = Linear(F, C, std=_xavier_std(F, C, beta), rng=rng)
        self.dropout = Dropout(config.output_dropout_prob, rng)

    def forward(self, x):
        h = self.dense_h_to_4h(x)  # (B, T, C) -> (B, T, F) or (B, T, 2F)
        if self.glu:
            x1, x2 = split(h, sections=2, axis=-1)  # 2 x (B, T, F)
            h = x1 * gelu(x2)  # (B, T, F)
        else:
            h = gelu(h)
        return self.dropout(self.dense_4h_to_h(h))  # (B, T, F) -> (B, T, C)


class GLMBlock(Module):
    """Post-LN with DeepNorm: h = LN_1(alpha h + attn(h)); h = LN_2(alpha h + mlp(h)).
    Pre-LN (layernorm_position="pre"): h = h + attn(LN_1(h)); h = h + mlp(LN_2(h))."""

    def __init__(self, config, rng):
        C, eps = config.hidden_size, config.layernorm_epsilon
        self.alpha = config.deepnorm_alpha
        self.pre = config.layernorm_position == "pre"
        if self.pre:  # THUDM's GLM-10B names
            self.input_layernorm = LayerNorm(C, eps=eps)
        self.attention = GLMAttention(config, rng)
        self.post_attention_layernorm = LayerNorm(C, eps=eps)
        self.mlp = GLMMLP(config, rng)
        if not self.pre:
            self.post_mlp_layernorm = LayerNorm(C, eps=eps)

    def forward(self, h, bias, rotary=(), cache=None, layer=0):
        if self.pre:  # the residual stream is never normalised: only each sublayer's input
            h = h + self.attention(self.input_layernorm(h), bias, rotary, cache, layer)
            return h + self.mlp(self.post_attention_layernorm(h))
        # alpha > 1 weighs the residual above the sublayer's update, which bounds how far
        # one update can move the stream (DeepNet section 3).
        h = self.post_attention_layernorm(h * self.alpha + self.attention(h, bias, rotary,
                                                                          cache, layer))
        return self.post_mlp_layernorm(h * self.alpha + self.mlp(h))


# --- the model -----------------------------------------------------------------------------


class GLMModel(Module):
    """Embeddings (word, and with learned positions position and block position) and the
    L blocks; GLM-130B's embedding LayerNorm before them."""

    def __init__(self, config, seed=0, rng=None):
        rng = np.random.default_rng(seed) if rng is None else rng
        C, P, std = config.hidden_size, config.max_sequence_length, config.initializer_range
        self.config = config
        self.word_embeddings = Embedding(config.vocab_size, C, std=std, rng=rng,
                                         what="token id")
        if config.position_encoding == "learned":
            self.position_embeddings = Embedding(P, C, std=std, rng=rng, what="position")
            self.block_position_embeddings = Embedding(P, C, std=std, rng=rng,
                                                       what="block position")
        else:  # RoPE: (D/2,) frequencies over the head, or over each half of it (2D)
            rotated = config.head_dim // (2 if config.position_encoding == "rotary_2d" else 1)
            self.rope_frequencies = rope_frequencies(rotated, config.rope_theta)
        self.embedding_dropout = Dropout(config.embedding_dropout_prob, rng)
        if config.embedding_layernorm:
            self.embedding_layernorm = LayerNorm(C, eps=config.layernorm_epsilon)
        self.layers = [GLMBlock(config, rng) for _ in range(config.num_layers)]
        if config.layernorm_position == "pre":
            self.final_layernorm = LayerNorm(C, eps=config.layernorm_epsilon)

    def forward(self, input_ids, position_ids, attention_mask, cache=None):
        """-> ModelOutput(last_hidden_state (B, T, C)).

        input_ids       (B, T) integers in [0, V)
        position_ids    (B, 2, T): row 0 positions, row 1 block positions, each in
                        [0, max_sequence_length)
        attention_mask  (B,) each row's Part A length `sep` in [0, S], the blank-infilling
                        mask (see `blank_infilling_mask`); or (B, T, S) booleans, 1 where
                        query t may see key s, for any other mask
        cache           a KVCache: this call's keys and values are appended to it, and its
                        queries sit at positions cache.length .. cache.length + T - 1
        """
        config = self.config
        input_ids = int_array(input_ids, "input_ids")
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must have shape (B, T) with T >= 1, got "
                             f"{input_ids.shape}")
        B, T = input_ids.shape
        past = 0 if cache is None else cache.length
        S = past + T
        position_ids = int_array(position_ids, "position_ids")
        if position_ids.shape != (B, 2, T):
            raise ValueError(f"position_ids has shape {position_ids.shape} but must be "
                             f"(B, 2, T) = {(B, 2, T)}: positions and block positions")
        mask = np.asarray(to_numpy(as_array(attention_mask)))
        if mask.dtype.kind not in "iub":
            raise TypeError(f"attention_mask must hold integers or booleans, got dtype "
                            f"{mask.dtype}")
        if mask.shape == (B,):
            bad = (mask < 0) | (mask > S)
            if bad.any():
                raise ValueError(f"attention_mask (sep) {int(mask[bad][0])} is not a Part A "
                                 f"length in [0, S={S}] ({past} cached + {T} new tokens)")
            allowed = blank_infilling_mask(mask, T, past)  # (B, T, S)
        elif mask.shape == (B, T, S):
            allowed = mask.astype(bool)
        else:
            raise ValueError(f"attention_mask has shape {mask.shape}; it must be (B,) = "
                             f"{(B,)} Part A lengths or (B, T, S) = {(B, T, S)} booleans")
        # (B, T, S) -> (B, 1, T, S), every head; on the host: attention moves it
        bias = additive_mask(allowed[:, None], self.word_embeddings.weight.dtype)

        if config.position_encoding != "learned":  # (tables check their own indices)
            bad = (position_ids < 0) | (position_ids >= config.max_sequence_length)
            if bad.any():
                raise ValueError(f"position_ids holds {int(position_ids[bad][0])}, outside "
                                 f"[0, max_sequence_length={config.max_sequence_length})")
        words = self.word_embeddings(input_ids)  # (B, T, C)
        if config.embedding_grad_scale != 1.0:
            words = grad_scale(words, alpha=config.embedding_grad_scale)
        rotary = ()
        if config.position_encoding == "learned":
            h = (words + self.position_embeddings(position_ids[:, 0])  # (B, T) -> (B, T, C)
                 + self.block_position_embeddings(position_ids[:, 1]))  # (B, T) -> (B, T, C)
        else:  # positions enter each attention as rotations: one row, or both (2D)
            rows = 2 if config.position_encoding == "rotary_2d" else 1
            dtype = self.word_embeddings.weight.dtype
            xp = array_module(words.data)  # the tables follow the weights' device
            rotary = tuple(tuple(xp.asarray(t) for t in  # (B, T, D / rows) each
                                 rope_cos_sin(position_ids[:, r], self.rope_frequencies, dtype))
                           for r in range(rows))
            h = words
        h = self.embedding_dropout(h)
        if config.embedding_layernorm:
            h = self.embedding_layernorm(h)
        for i, block in enumerate(self.layers):
            h = run_block(self, block, h, bias, rotary, cache, i)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        if config.layernorm_position == "pre":
            h = self.final_layernorm(h)
        return ModelOutput(last_hidden_state=h)


class GLMForConditionalGeneration(PreTrainedModel):
    """GLM with its single tied output layer: logits = h @ E_word^T, (B, T, C) -> (B, T, V).

    Named as THUDM's class. Weights are drawn from `seed` (embeddings N(0, 0.02^2), the
    sublayers' projections Xavier with DeepNorm's gains, zero biases, LayerNorm 1 and 0).
    save_pretrained / npplm.from_pretrained use npplm's own config.json (GLMConfig.to_hf).
    """

    config_class = GLMConfig

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.transformer = GLMModel(config, rng=rng)
        self.lm_head = Linear.tied(self.transformer.word_embeddings.weight)  # (V, C) table

    def forward(self, input_ids, position_ids, attention_mask, labels=None, cache=None):
        """-> ModelOutput(logits (B, T, V), loss: mean cross-entropy over labels != -100).

        labels (B, T) are the targets of each position, not shifted (see
        `blank_infilling_inputs`); see GLMModel.forward for the other arguments.
        """
        h = self.transformer(input_ids, position_ids, attention_mask, cache)
        logits = self.lm_head(h.last_hidden_state)  # (B, T, C) @ (C, V) -> (B, T, V)
        loss = None
        if labels is not None:
            labels = int_array(labels, "labels")
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels has shape {labels.shape} but the input ids have "
                                 f"{logits.shape[:2]}")
            loss = cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        return ModelOutput(loss=loss, logits=logits)

    def kv_cache_layout(self):
        """(L, H, D): every layer caches all its heads (npplm.generation)."""
        return self.config.num_layers, self.config.num_attention_heads, self.config.head_dim


# --- filling a blank -----------------------------------------------------------------------


def fill_blank(model, part_a, max_new_tokens, *, temperature=0.0, top_k=None, top_p=None,
               seed=None, num_beams=1, length_penalty=1.0, early_stopping=False, stream=None,
               kv_cache_dtype=None):
    """Fill the first [MASK] or [gMASK] of each row of Part A, one token at a time.

    part_a (B, T_A): rows of the same length, each holding a [MASK] or [gMASK] (for long
    text GLM appends [gMASK] at the end). Part A is encoded once, bidirectionally, into a
    KV cache; then [S] is fed at (position of the mask, block position 1), and each chosen
    token at block positions 2, 3, ..., until every row has produced [E] or
    max_new_tokens tokens were chosen. temperature 0 is greedy; num_beams > 1 searches
    beams (npplm.generation.decode, the loop every family shares). stream is called with
    each step's (B,) tokens as they come (num_beams=1). kv_cache_dtype: what the KV cache
    stores (None, "float16", "float32", "int8": model.new_cache).
    Returns a list of B lists of new ids, each without [E]. The model runs under no_grad;
    call .eval() first if it was training (dropout).
    """
    config = model.config
    part_a = to_numpy(int_array(part_a, "part_a"))
    if part_a.ndim != 2 or part_a.shape[1] == 0:
        raise ValueError(f"part_a must have shape (B, T_A) with T_A >= 1, got {part_a.shape}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
    B, sep = part_a.shape
    is_mask = (part_a == config.mask_token_id) | (part_a == config.gmask_token_id)
    if not is_mask.any(axis=1).all():
        row = int(np.flatnonzero(~is_mask.any(axis=1))[0])
        raise ValueError(f"part_a row {row} holds no [MASK] ({config.mask_token_id}) or "
                         f"[gMASK] ({config.gmask_token_id}) token to fill")
    total = sep + max_new_tokens
    if total > config.max_sequence_length:
        raise ValueError(f"{sep} Part A tokens + {max_new_tokens} new = {total} exceed "
                         f"max_sequence_length={config.max_sequence_length}")
    R = B * num_beams  # row b num_beams + j is beam j of input b
    part_a = np.repeat(part_a, num_beams, axis=0)  # (R, T_A)
    mask_at = np.repeat(is_mask.argmax(axis=1), num_beams)  # (R,) the first mask of each row
    seps = np.full(R, sep)
    # GLM-130B's one-row RoPE: a [gMASK] continuation counts on from the mask, a [MASK]
    # blank stays at its position (blank_infilling_inputs, count_on)
    count_on = ((part_a[np.arange(R), mask_at] == config.gmask_token_id)  # (R,)
                & (config.position_encoding == "rotary"))
    cache = model.new_cache(R, total, dtype=kv_cache_dtype)
    block_position = 0  # of the token fed last: [S] is 1, the first chosen token 2, ...

    def step(tokens, rows=None):
        """Logits (R, V) of the next token of each blank, once `tokens` (R,) are fed."""
        nonlocal block_position
        if rows is not None:  # beam search: row i continues the sequence of rows[i]
            cache.reorder(rows)
        if tokens is None:  # Part A into the cache, then [S]
            positions = np.stack([np.tile(np.arange(sep), (R, 1)), np.zeros((R, sep), int)], 1)
            model(part_a, positions, seps, cache=cache)  # (R, 2, T_A) positions
            tokens = np.full(R, config.sop_token_id)
        block_position += 1
        pos = np.stack([mask_at + count_on * block_position,
                        np.full(R, block_position)], 1)[:, :, None]  # (R, 2, 1)
        return to_numpy(model(tokens[:, None], pos, seps, cache=cache).logits.data[:, -1])

    with no_grad():
        new = decode(step, B, max_new_tokens, num_beams=num_beams, temperature=temperature,
                     top_k=top_k, top_p=top_p, eos_token_id=config.eop_token_id,
                     pad_token_id=config.eop_token_id, seed=seed,
                     length_penalty=length_penalty, early_stopping=early_stopping,
                     stream=stream)
    out = []
    for row in new:  # (n,) new tokens: keep those before [E] (after it: padding)
        ends = np.flatnonzero(row == config.eop_token_id)
        out.append([int(t) for t in row[:ends[0] if ends.size else len(row)]])
    return out
