"""RoBERTa: BERT's encoder, pre-trained longer, on more text, by masked LM alone.

Paper: Liu, Ott, Goyal, Du, Joshi, Chen, Levy, Lewis, Zettlemoyer and Stoyanov, "RoBERTa: A
Robustly Optimized BERT Pretraining Approach" (2019), arXiv:1907.11692.
Reference implementation: Hugging Face transformers, `models/roberta/modeling_roberta.py`
(checked against transformers 5.23 with `attn_implementation="eager"`), which loads the
checkpoints converted from fairseq's RoBERTa. Every parameter here carries the Hugging Face
checkpoint key as its dotted attribute path, so loading is an identity map.

What is different from GPT-2 (the baseline a reader studies first) -- the BERT part, see
npplm/models/bert.py for the full list:
  - An encoder: every position attends to every other (no causal mask), only padding is
    masked; trained to fill in hidden tokens rather than to predict the next one.
  - Post-LN blocks, x = LN(x + sublayer(x)), and a LayerNorm on the embeddings.
  - Separate query/key/value projections stored (out, in), exact erf GELU.
What is different from BERT. Most of the paper is the training recipe, which changes no line
of the forward pass: dynamic masking (a new mask each epoch), no next sentence prediction
(inputs are full sentences packed up to 512 tokens), batches of 8K sequences, 10 times the
text, and GPT-2's byte-level BPE in place of WordPiece. What the checkpoints show:
  1. Positions start after the padding index (fairseq's `make_positions`). Token i of a row
     (counting only its non-pad tokens, from 1) gets position pad_token_id + i; every pad
     token gets position pad_token_id. With <pad> = 1 the first real token sits at row 2, so
     512 tokens need max_position_embeddings = 514; row 0 is never used, row 1 only by pads.
     A left-padded row therefore starts at position 2 just like a right-padded one.
  2. The position table has a padding row, as the word table does (torch's
     nn.Embedding(padding_idx=1)): it starts at zero and receives no gradient.
  3. One token type (type_vocab_size = 1): no sentence B. The table stays, a single row
     added to every token (the same as one more bias), so that the checkpoints load.
  4. LayerNorm eps 1e-5 (fairseq's, PyTorch's default) rather than TensorFlow BERT's 1e-12.
  5. The MLM head is BERT's under fairseq's names: lm_head.dense, GELU (always the exact
     one, whatever hidden_act says), lm_head.layer_norm, then lm_head.decoder tied to the
     word embeddings, with bias lm_head.bias. No NSP head, so no pre-training class with
     two objectives.
  6. Sentence classification does not use the pooler (no RoBERTa objective trains it;
     fairseq's model has none): its head takes the <s> vector through its own
     dense + tanh, then out_proj. RobertaModel keeps BERT's pooler so checkpoints that
     carry one load, and multiple choice uses it, as in the reference.
  7. The vocabulary: V = 50265 byte-level BPE tokens with <s> = 0, <pad> = 1, </s> = 2,
     <unk> = 3 first and <mask> = 50264 last (fairseq's dictionary order).

The encoder blocks and the pooler are BERT's, imported from npplm.models.bert: the
checkpoint keys below `roberta.encoder.layer.N` and `roberta.pooler` are the same.

The checkpoint key map: identity, except that
  - `embeddings.position_ids` / `embeddings.token_type_ids` are buffers, not weights
    (older checkpoints store them): ignored on load;
  - `lm_head.decoder.weight` is `roberta.embeddings.word_embeddings.weight` and
    `lm_head.decoder.bias` is `lm_head.bias` (tied: one Tensor, saved once);
  - classes without a pooler ignore `roberta.pooler.*` keys: the published roberta-base and
    roberta-large checkpoints are named RobertaForMaskedLM but also hold a pooler.
To fine-tune a pre-trained checkpoint with a new head, load the backbone only:
`head = RobertaForSequenceClassification(config); head.roberta.load_weights(read_weights(p))`.

Parameter counts (from `num_parameters`, equal to transformers' on the meta device):
    RobertaConfig.base()   RobertaModel 124,645,632 (pooler included)      "125M"
                           RobertaForMaskedLM 124,697,433
    RobertaConfig.large()  RobertaModel 355,359,744 (pooler included)      "355M"
                           RobertaForMaskedLM 355,412,057

Glossary of shape letters: B batch, T query length, S key length (S = T: self-attention),
C model width (hidden_size), H heads, D head dim (C / H), F feed-forward width
(intermediate_size), V vocabulary, L layers, N choices (multiple choice).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from autograd import Tensor, tanh, to_numpy
from npplm.layers import (
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    PaddingMask,
    activation,
    check_attention_mask,
    cross_entropy,
    int_array,
    sequence_classification_loss,
)
from npplm.models import bert
from npplm.models.base import (
    PreTrainedModel,
    check_divides,
    check_positive_ints,
    check_probabilities,
    check_scales,
)
from npplm.models.bert import (
    PROBLEM_TYPES,
    BertEncoder,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForTokenClassification,
    BertPooler,
    classifier_dropout,
)
from npplm.models.output import ModelOutput

# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class RobertaConfig:
    """RoBERTa's hyperparameters, named as in Hugging Face's `config.json`.

    The defaults are transformers' RobertaConfig defaults, so that a config.json that leaves a
    key out means here what it means to transformers. They are *not* the published models,
    which set max_position_embeddings=514, type_vocab_size=1 and layer_norm_eps=1e-5: use
    `base()` and `large()` for those.
    """

    vocab_size: int = 50265  # V: byte-level BPE with fairseq's <s>, <pad>, </s>, <unk> first
    hidden_size: int = 768  # C: the residual stream width
    num_hidden_layers: int = 12  # L: encoder blocks
    num_attention_heads: int = 12  # H; each head has D = C / H dimensions
    intermediate_size: int = 3072  # F: feed-forward width, 4 C in both published sizes
    hidden_act: str = "gelu"  # feed-forward activation (the MLM head always uses exact GELU)
    hidden_dropout_prob: float = 0.1  # after embeddings and after each sublayer
    attention_probs_dropout_prob: float = 0.1  # on the attention probabilities
    # Rows of the learned position table. The first pad_token_id + 1 rows hold no real token
    # (see `max_length`): the published 514 rows fit 512 tokens.
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # token types; the published models have 1 (no sentence B)
    layer_norm_eps: float = 1e-12  # transformers' default; the published models use 1e-5
    initializer_range: float = 0.02  # std of the normal initialisation of weights
    # <pad>: its word and position rows start at 0 and get no gradient; pad tokens take
    # position pad_token_id and real tokens count up from pad_token_id + 1.
    pad_token_id: int = 1
    bos_token_id: int | None = 0  # <s>, which the classification head reads; kept for the
    eos_token_id: int | tuple[int, ...] | None = 2  # round trip: </s>; unused by the model
    tie_word_embeddings: bool = True  # MLM decoder = word table (False: not implemented)
    num_labels: int = 2  # classes of the classification heads (2: QA's start and end)
    id2label: tuple[str, ...] | None = None  # class names; None: LABEL_0, LABEL_1, ...
    problem_type: str | None = None  # sequence classification loss; None: from the labels
    classifier_dropout: float | None = None  # in the classifiers; None: hidden_dropout_prob

    def __post_init__(self):
        check_positive_ints(self, "vocab_size", "hidden_size", "num_hidden_layers",
                            "num_attention_heads", "intermediate_size",
                            "max_position_embeddings", "type_vocab_size", "num_labels")
        check_divides(self, "hidden_size", "num_attention_heads")
        check_probabilities(self, "hidden_dropout_prob", "attention_probs_dropout_prob")
        if self.classifier_dropout is not None:
            check_probabilities(self, "classifier_dropout")
        check_scales(self, positive=["layer_norm_eps"], non_negative=["initializer_range"])
        activation(self.hidden_act)  # raises ValueError naming the known activations
        # Positions are counted from the padding index, so RoBERTa cannot do without one.
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"RobertaConfig: pad_token_id={self.pad_token_id!r} must be a token "
                             f"of the vocabulary (vocab_size={self.vocab_size}): RoBERTa counts "
                             "positions from it")
        if self.max_length < 1:
            raise ValueError(f"RobertaConfig: max_position_embeddings="
                             f"{self.max_position_embeddings} leaves no position for a token: "
                             f"positions start at pad_token_id + 1 = {self.pad_token_id + 1}")
        if self.problem_type not in (None, *PROBLEM_TYPES):
            raise ValueError(f"RobertaConfig: problem_type={self.problem_type!r}; use None or "
                             f"one of {PROBLEM_TYPES}")
        if self.id2label is not None and len(self.id2label) != self.num_labels:
            raise ValueError(f"RobertaConfig: id2label names {len(self.id2label)} classes but "
                             f"num_labels={self.num_labels}")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads  # D

    @property
    def max_length(self):
        """The longest input, padding not counted: the last position is
        pad_token_id + max_length = max_position_embeddings - 1 (512 for the published 514)."""
        return self.max_position_embeddings - self.pad_token_id - 1

    # Presets: the published sizes (BERT-base's and BERT-large's shapes, as in the paper) with
    # the settings of their config.json files, and one for tests.
    @classmethod
    def base(cls, **overrides):
        """roberta-base: L=12, C=768, H=12 (124,645,632 parameters with the pooler)."""
        return cls(**{**_PUBLISHED, **overrides})

    @classmethod
    def large(cls, **overrides):
        """roberta-large: L=24, C=1024, H=16 (355,359,744 parameters with the pooler)."""
        return cls(**{**_PUBLISHED, **dict(hidden_size=1024, num_hidden_layers=24,
                                           num_attention_heads=16, intermediate_size=4096),
                      **overrides})

    @classmethod
    def tiny(cls, **overrides):
        """A few thousand parameters for tests, with the published settings (one token type,
        eps 1e-5, pad 1). The widths differ (F=37) so that a mixed-up axis fails loudly
        instead of broadcasting; 34 position rows fit 32 tokens."""
        return cls(**{**_PUBLISHED, **dict(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=37,
                                           max_position_embeddings=34), **overrides})

    # Hugging Face's config.json in and out.
    @classmethod
    def from_hf(cls, hf):
        """From a Hugging Face config dict; keys RoBERTa does not use are ignored.

        Refuses what this file does not implement rather than computing something else:
        another model_type, relative position embeddings, the decoder variant.
        """
        if hf.get("model_type", "roberta") != "roberta":
            raise ValueError(f"RobertaConfig.from_hf: model_type {hf['model_type']!r} is not "
                             "roberta")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("RobertaConfig.from_hf: position_embedding_type="
                             f"{hf['position_embedding_type']!r} is not implemented "
                             "(only 'absolute')")
        if hf.get("is_decoder") or hf.get("add_cross_attention"):
            raise ValueError("RobertaConfig.from_hf: the decoder variant of RoBERTa "
                             "(is_decoder, add_cross_attention: RobertaForCausalLM) is not "
                             "implemented")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in names and k != "id2label"}
        if isinstance(kwargs.get("eos_token_id"), list):  # a frozen config holds tuples
            kwargs["eos_token_id"] = tuple(kwargs["eos_token_id"])
        if hf.get("id2label"):
            # JSON keys are strings: {"0": "NEG", "1": "POS"}. Default names are dropped, so
            # a config that went through Hugging Face equals the one that went in.
            labels = tuple(v for _, v in sorted(hf["id2label"].items(), key=lambda kv: int(kv[0])))
            kwargs.setdefault("num_labels", len(labels))
            if labels != tuple(f"LABEL_{i}" for i in range(len(labels))):
                kwargs["id2label"] = labels
        return cls(**kwargs)

    def to_hf(self):
        """A Hugging Face config dict (model_type "roberta"), loadable by transformers."""
        hf = dataclasses.asdict(self)
        names = self.id2label or tuple(f"LABEL_{i}" for i in range(self.num_labels))
        del hf["id2label"], hf["num_labels"]  # transformers derives num_labels from id2label
        hf["id2label"] = {str(i): name for i, name in enumerate(names)}
        hf["label2id"] = {name: i for i, name in enumerate(names)}
        hf["model_type"] = "roberta"
        return hf


# What the published checkpoints' config.json files set differently from the defaults.
_PUBLISHED = dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                  layer_norm_eps=1e-5)


def num_parameters(config, architecture="RobertaModel"):
    """Parameters of `architecture` (a class name below) for `config`, without allocating.

    The backbone is BERT's (bert.num_parameters without the pooler): embeddings
    (V + max_positions + type_vocab) C + 2C, and per layer 4 (C^2 + C) + 2 C F + F + C + 4C.
    The heads: pooler C^2 + C; MLM head C^2 + C (dense) + 2C (layer_norm) + V (bias; the
    decoder is the tied word table); classification head C^2 + C (dense) + C n + n
    (out_proj), n = num_labels. Tied weights count once, as transformers counts them.

        RobertaConfig.base()   RobertaModel 124,645,632   RobertaForMaskedLM 124,697,433
        RobertaConfig.large()  RobertaModel 355,359,744   RobertaForMaskedLM 355,412,057
    """
    C, n = config.hidden_size, config.num_labels
    backbone = bert.num_parameters(config, with_pooler=False)
    pooler = C * C + C
    heads = {
        "RobertaModel": pooler,
        "RobertaForMaskedLM": (C * C + C) + 2 * C + config.vocab_size,
        "RobertaForSequenceClassification": (C * C + C) + (C * n + n),
        "RobertaForMultipleChoice": pooler + (C + 1),
        "RobertaForTokenClassification": C * n + n,
        "RobertaForQuestionAnswering": C * n + n,
    }
    if architecture not in heads:
        raise ValueError(f"num_parameters: unknown architecture {architecture!r}; known: "
                         f"{', '.join(heads)}")
    return backbone + heads[architecture]


# --- positions and embeddings ----------------------------------------------------------------


def position_ids_from_input_ids(input_ids, padding_idx):
    """fairseq's make_positions: each token's position, counted after the padding index.

        mask = (ids != padding_idx)             1 for tokens, 0 for pads
        positions = cumsum(mask, axis=T) * mask + padding_idx

    (B, T) -> (B, T). The k-th non-pad token of a row (k = 1, 2, ...) gets padding_idx + k,
    wherever the pads are; every pad gets padding_idx. Positions follow the pad *token*, not
    the attention mask, exactly as in the reference.
    """
    mask = (input_ids != padding_idx).astype(np.int64)  # (B, T)
    return np.cumsum(mask, axis=1) * mask + padding_idx  # (B, T)


class RobertaEmbeddings(Module):
    """Adapted from npplm.models.bert: BertEmbeddings, with positions looked up from
    `position_ids_from_input_ids` (BERT slices rows 0..T-1) in a table with a padding row.

    x = LayerNorm(word[ids] + token_type[types] + position[positions]), then dropout.
    """

    def __init__(self, config, rng):
        C, std, pad = config.hidden_size, config.initializer_range, config.pad_token_id
        self.word_embeddings = Embedding(config.vocab_size, C, std=std, rng=rng,
                                         padding_idx=pad)
        # The reference builds the position table as nn.Embedding(max_positions, C,
        # padding_idx=pad) too: row `pad`, which every pad token looks up, starts at zero and
        # gets no gradient.
        self.position_embeddings = Embedding(config.max_position_embeddings, C, std=std,
                                             rng=rng, what="position", padding_idx=pad)
        self.token_type_embeddings = Embedding(config.type_vocab_size, C, std=std, rng=rng,
                                               what="token type id")
        self.LayerNorm = LayerNorm(C, eps=config.layer_norm_eps)  # capitalised as in HF keys
        self.dropout = Dropout(config.hidden_dropout_prob, rng)

    def forward(self, input_ids, token_type_ids, position_ids):
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)  # (B, T, C), a lookup per token
        return self.dropout(self.LayerNorm(x))


# --- the backbone ---------------------------------------------------------------------------

# Buffers some checkpoints store next to the weights (arange and zeros): not parameters.
_BUFFERS = (r"(^|\.)embeddings\.position_ids$", r"(^|\.)embeddings\.token_type_ids$")
_POOLER = r"(^|\.)pooler\."


class RobertaPreTrainedModel(PreTrainedModel):
    """What every RoBERTa class shares: its config class, the backbone's name, ignored keys."""

    config_class = RobertaConfig
    base_model_prefix = "roberta"
    ignore_on_load = _BUFFERS


class RobertaModel(RobertaPreTrainedModel):
    """Adapted from npplm.models.bert: BertModel, with RoBERTa's embeddings and their limit.

    The encoder: ids (B, T) -> last_hidden_state (B, T, C) and pooler_output (B, C).

    forward(input_ids, attention_mask=None, token_type_ids=None):
        input_ids       (B, T) integers in [0, V); pad_token_id marks padding *for the
                        positions*, whatever the attention mask says
        attention_mask  (B, T) 1 for tokens, 0 for padding; None: attend everywhere
        token_type_ids  (B, T) integers in [0, type_vocab_size); None: all 0
    Inputs are NumPy (or CuPy) integer arrays, Tensors, or lists.

    `rng` lets a task head share its generator with the backbone it owns; otherwise the
    weights are drawn from `seed`, as Hugging Face initialises them: N(0, initializer_range^2)
    for weights and embeddings, zero biases and padding rows, LayerNorm 1 and 0.
    """

    def __init__(self, config, add_pooling_layer=True, seed=0, rng=None):
        rng = np.random.default_rng(seed) if rng is None else rng
        self.config = config
        self.embeddings = RobertaEmbeddings(config, rng)
        self.encoder = BertEncoder(config, rng)  # BERT's blocks: identical math and keys
        self.pooler = BertPooler(config, rng) if add_pooling_layer else None
        if not add_pooling_layer:  # a checkpoint's pooler is not needed here
            self.ignore_on_load = (*_BUFFERS, _POOLER)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        config = self.config
        input_ids = int_array(input_ids, "input_ids")
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must have shape (B, T) with T >= 1, got "
                             f"{input_ids.shape}")
        B, T = input_ids.shape
        # Positions are integer bookkeeping: counted on the host.
        positions = position_ids_from_input_ids(to_numpy(input_ids), config.pad_token_id)
        # The last position of a row is pad_token_id + its number of tokens. Checked on the
        # tokens, not on T: a batch padded past the limit is fine, as in the reference.
        longest = int(positions.max()) - config.pad_token_id
        if longest > config.max_length:
            raise ValueError(f"input_ids has a row of {longest} tokens (padding not counted) "
                             f"but RoBERTa fits at most {config.max_length}: positions start "
                             f"at pad_token_id + 1 = {config.pad_token_id + 1} and "
                             f"max_position_embeddings is {config.max_position_embeddings}; "
                             "truncate or split the input")
        if token_type_ids is None:
            token_type_ids = np.zeros(input_ids.shape, dtype=np.int64)  # all sentence A
        token_type_ids = int_array(token_type_ids, "token_type_ids")
        if token_type_ids.shape != input_ids.shape:
            raise ValueError(f"token_type_ids has shape {token_type_ids.shape} but input_ids "
                             f"has {input_ids.shape}: they must be equal")
        if attention_mask is not None:
            check_attention_mask(attention_mask, B, T)  # (B, T) of 1/0
        # Padding keys are skipped by the fused attention, or get the additive bias (0 for
        # tokens, the dtype's min for padding) where it does not run (npplm.layers.masks).
        bias = PaddingMask(attention_mask)

        h = self.embeddings(input_ids, token_type_ids, positions)  # (B, T) -> (B, T, C)
        h = self.encoder(h, bias)  # (B, T, C)
        pooled = self.pooler(h) if self.pooler is not None else None  # (B, C)
        return ModelOutput(last_hidden_state=h, pooler_output=pooled)


# --- the pre-training head: masked LM -----------------------------------------------------


class RobertaLMHead(Module):
    """Adapted from npplm.models.bert: BertLMPredictionHead, flattened into one module under
    fairseq's names (BERT's transform.dense / transform.LayerNorm / predictions.bias).

        logits = LayerNorm(GELU(W h + b)) @ E^T + bias,  (B, T, C) -> (B, T, V)

    E is the word embedding table. GELU is the exact erf form whatever config.hidden_act
    says: the reference calls it directly.
    """

    def __init__(self, config, word_embeddings, rng):
        C = config.hidden_size
        self.dense = Linear(C, C, std=config.initializer_range, rng=rng)
        self.layer_norm = LayerNorm(C, eps=config.layer_norm_eps)
        # `bias` is defined before `decoder`, whose bias it also is: a tied Tensor is saved
        # under the first name met, and the published checkpoints call it lm_head.bias.
        self.bias = Tensor(np.zeros(config.vocab_size, dtype=np.float32), requires_grad=True)
        if not config.tie_word_embeddings:
            # Every published RoBERTa ties them (fairseq shares the table); untied, transformers
            # 5 also unties the bias from lm_head.bias: refused rather than guessed.
            raise ValueError("RoBERTa's MLM head with tie_word_embeddings=False is not "
                             "implemented: the decoder is the word embedding table")
        self.decoder = Linear.tied(word_embeddings.weight, self.bias)  # the (V, C) table
        self.act = activation("gelu")

    def forward(self, h):
        x = self.layer_norm(self.act(self.dense(h)))  # (B, T, C)
        return self.decoder(x)  # (B, T, C) @ (C, V) -> (B, T, V)


class RobertaForMaskedLM(RobertaPreTrainedModel):
    """The masked LM, RoBERTa's only pre-training objective: logits (B, T, V); with labels
    (B, T), the original ids at masked positions and -100 elsewhere, the mean cross-entropy."""

    # roberta-base and roberta-large are saved as RobertaForMaskedLM with a pooler besides.
    ignore_on_load = (*_BUFFERS, _POOLER)

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.roberta = RobertaModel(config, add_pooling_layer=False, rng=rng)
        self.lm_head = RobertaLMHead(config, self.roberta.embeddings.word_embeddings, rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        h = self.roberta(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.lm_head(h)  # (B, T, C) -> (B, T, V)
        loss = None if labels is None else cross_entropy(logits, int_array(labels, "labels"))
        return ModelOutput(loss=loss, logits=logits)


# --- fine-tuning heads -----------------------------------------------------------------------


class RobertaClassificationHead(Module):
    """Adapted from npplm.models.bert: BertPooler and BertForSequenceClassification's
    classifier, in one head that is trained at fine-tuning (RoBERTa pre-trains no pooler):

        logits = out_proj(dropout(tanh(dense(dropout(h_<s>))))),  (B, T, C) -> (B, n)
    """

    def __init__(self, config, rng):
        C = config.hidden_size
        self.dense = Linear(C, C, std=config.initializer_range, rng=rng)
        self.dropout = classifier_dropout(config, rng)  # used twice, fresh masks each time
        self.out_proj = Linear(C, config.num_labels, std=config.initializer_range, rng=rng)

    def forward(self, h):
        x = h[:, 0]  # (B, T, C) -> (B, C): position 0 holds <s>, BERT's [CLS]
        x = tanh(self.dense(self.dropout(x)))  # (B, C)
        return self.out_proj(self.dropout(x))  # (B, C) -> (B, n)


class RobertaForSequenceClassification(RobertaPreTrainedModel):
    """Sentence(-pair) classification or regression from <s>: logits (B, num_labels).

    The loss is BERT's (`sequence_classification_loss`): mean squared error, cross-entropy,
    or binary cross-entropy per class, by config.problem_type or, when None, the labels.
    """

    ignore_on_load = (*_BUFFERS, _POOLER)

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.roberta = RobertaModel(config, add_pooling_layer=False, rng=rng)
        self.classifier = RobertaClassificationHead(config, rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        h = self.roberta(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.classifier(h)  # (B, T, C) -> (B, num_labels)
        loss = None if labels is None else sequence_classification_loss(
            logits, labels, self.config.num_labels, self.config.problem_type)
        return ModelOutput(loss=loss, logits=logits)


class RobertaForMultipleChoice(RobertaPreTrainedModel, BertForMultipleChoice):
    """BERT's multiple-choice head (bert.py) over RoBERTa's encoder, with the pooler: one
    score per (context, choice) pair from the pooled <s>, softmaxed over the N choices.
    Inputs (B, N, T); logits (B, N); labels (B,). The dropout is always
    hidden_dropout_prob here (the reference ignores classifier_dropout for this head)."""

    backbone_class = RobertaModel

    @staticmethod
    def choice_dropout(config, rng):
        return Dropout(config.hidden_dropout_prob, rng)


class RobertaForTokenClassification(RobertaPreTrainedModel, BertForTokenClassification):
    """BERT's token-classification head (bert.py) over RoBERTa's encoder, no pooler:
    logits (B, T, num_labels); labels (B, T) with -100 where ignored."""

    backbone_class = RobertaModel
    ignore_on_load = (*_BUFFERS, _POOLER)


class RobertaForQuestionAnswering(RobertaPreTrainedModel, BertForQuestionAnswering):
    """BERT's extractive-QA head (bert.py) over RoBERTa's encoder: start_logits and
    end_logits (B, T); the loss is npplm.layers.span_extraction_loss."""

    backbone_class = RobertaModel
    ignore_on_load = (*_BUFFERS, _POOLER)
