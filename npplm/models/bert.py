"""BERT: a bidirectional Transformer encoder, pre-trained by masked language modelling.

Paper: Devlin, Chang, Lee and Toutanova, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding" (NAACL 2019), arXiv:1810.04805.
Reference implementation: Hugging Face transformers, `models/bert/modeling_bert.py`
(checked against transformers 5.x with `attn_implementation="eager"`), which itself loads
the checkpoints of google-research/bert. Every parameter here carries the Hugging Face
checkpoint key as its dotted attribute path, so loading is an identity map.

What is different from GPT-2 (the baseline a reader studies first):
  - An encoder: every position attends to every other (no causal mask), so BERT reads a
    whole sentence at once but cannot generate left to right. Only padding is masked.
  - Post-LN: LayerNorm comes *after* each residual addition, x = LN(x + sublayer(x)), and
    once more on the embeddings; GPT-2 normalises before each sublayer and adds a final ln_f.
  - Three embedding tables are summed: token, absolute position, and token type (segment
    A or B, so that one input can hold a sentence pair).
  - GELU in its exact erf form (GPT-2 uses the tanh approximation); LayerNorm eps is 1e-12.
  - Separate query/key/value projections stored (out, in) like torch.nn.Linear, where GPT-2
    has one fused c_attn stored (in, out) by its Conv1D. No weight here needs transposing.
  - Two pre-training objectives: masked LM (predict 15% of tokens, hidden behind [MASK],
    from both sides) through a transform (dense + GELU + LayerNorm) and a decoder tied to
    the word embeddings with its own bias; and next sentence prediction from the "pooled"
    [CLS] vector, tanh(W h_[CLS] + b).
  - Task heads fine-tune the whole network: a classifier on the pooled vector (sentence
    tasks), on every position (token tasks, NER), or start/end logits (extractive QA).

The checkpoint key map: identity, except that
  - `embeddings.position_ids` / `embeddings.token_type_ids` are buffers, not weights
    (older checkpoints store them): ignored on load;
  - `cls.predictions.decoder.weight` is `bert.embeddings.word_embeddings.weight` and
    `cls.predictions.decoder.bias` is `cls.predictions.bias` (tied: one Tensor, saved once);
  - heads without a pooler ignore `pooler.*` keys, and BertForMaskedLM ignores the NSP
    head, as the original bert-base-uncased checkpoint (named BertForMaskedLM) has both.
To fine-tune a pre-trained checkpoint with a new head, load the backbone only:
`head = BertForSequenceClassification(config); head.bert.load_weights(read_weights(path))`.

Glossary of shape letters: B batch, T query length, S key length (S = T: self-attention),
C model width (hidden_size), H heads, D head dim (C / H), F feed-forward width
(intermediate_size), V vocabulary, L layers, N choices (multiple choice).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from autograd import Tensor, tanh
from npplm.layers import (
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    PaddingMask,
    activation,
    attention,
    check_attention_mask,
    cross_entropy,
    int_array,
    merge_heads,
    run_block,
    sequence_classification_loss,
    span_extraction_loss,
    split_heads,
)
from npplm.models.base import (
    PreTrainedModel,
    check_divides,
    check_positive_ints,
    check_probabilities,
    check_scales,
    check_token_ids,
)
from npplm.models.output import ModelOutput

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class BertConfig:
    """BERT's hyperparameters, named as in Hugging Face's `config.json` (defaults: BERT-base)."""

    vocab_size: int = 30522  # V: WordPiece vocabulary of the uncased English models
    hidden_size: int = 768  # C: the residual stream width
    num_hidden_layers: int = 12  # L: encoder blocks
    num_attention_heads: int = 12  # H; each head has D = C / H dimensions
    intermediate_size: int = 3072  # F: feed-forward width, 4 C in every published size
    hidden_act: str = "gelu"  # feed-forward and MLM-transform activation (exact erf GELU)
    hidden_dropout_prob: float = 0.1  # after embeddings and after each sublayer
    attention_probs_dropout_prob: float = 0.1  # on the attention probabilities
    max_position_embeddings: int = 512  # rows of the learned position table: longest input
    type_vocab_size: int = 2  # token types (segments): sentence A = 0, sentence B = 1
    layer_norm_eps: float = 1e-12  # BERT's TensorFlow original used 1e-12, not 1e-5
    initializer_range: float = 0.02  # std of the normal initialisation of weights
    pad_token_id: int | None = 0  # [PAD]: its embedding row starts at 0 and gets no gradient
    tie_word_embeddings: bool = True  # MLM decoder = word table (False: not implemented)
    num_labels: int = 2  # classes of the classification heads (2: QA's start and end)
    id2label: tuple[str, ...] | None = None  # class names; None: LABEL_0, LABEL_1, ...
    problem_type: str | None = None  # sequence classification loss; None: from the labels
    classifier_dropout: float | None = None  # before the classifiers; None: hidden_dropout

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
        check_token_ids(self, "pad_token_id", optional=True)
        if self.problem_type not in (None, *PROBLEM_TYPES):
            raise ValueError(f"BertConfig: problem_type={self.problem_type!r}; use None or "
                             f"one of {PROBLEM_TYPES}")
        if self.id2label is not None and len(self.id2label) != self.num_labels:
            raise ValueError(f"BertConfig: id2label names {len(self.id2label)} classes but "
                             f"num_labels={self.num_labels}")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads  # D

    # Presets: the published sizes (Devlin et al., table in section 3) and one for tests.
    @classmethod
    def base(cls, **overrides):
        """BERT-base: L=12, C=768, H=12 (110M parameters)."""
        return cls(**overrides)

    @classmethod
    def large(cls, **overrides):
        """BERT-large: L=24, C=1024, H=16 (340M parameters)."""
        return cls(**{**dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096), **overrides})

    @classmethod
    def tiny(cls, **overrides):
        """A few thousand parameters for tests; the widths differ (F=37) so that a mixed-up
        axis fails loudly instead of broadcasting."""
        return cls(**{**dict(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=37,
                             max_position_embeddings=32), **overrides})

    # Hugging Face's config.json in and out.
    @classmethod
    def from_hf(cls, hf):
        """From a Hugging Face config dict; keys BERT does not use are ignored.

        Refuses what this file does not implement rather than computing something else:
        another model_type, relative position embeddings, the decoder variant.
        """
        if hf.get("model_type", "bert") != "bert":
            raise ValueError(f"BertConfig.from_hf: model_type {hf['model_type']!r} is not bert")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("BertConfig.from_hf: position_embedding_type="
                             f"{hf['position_embedding_type']!r} is not implemented "
                             "(only 'absolute')")
        if hf.get("is_decoder") or hf.get("add_cross_attention"):
            raise ValueError("BertConfig.from_hf: the decoder variant of BERT (is_decoder, "
                             "add_cross_attention) is not implemented")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in names and k != "id2label"}
        if hf.get("id2label"):
            # JSON keys are strings: {"0": "NEG", "1": "POS"}. Default names are dropped, so
            # a config that went through Hugging Face equals the one that went in.
            labels = tuple(v for _, v in sorted(hf["id2label"].items(), key=lambda kv: int(kv[0])))
            kwargs.setdefault("num_labels", len(labels))
            if labels != tuple(f"LABEL_{i}" for i in range(len(labels))):
                kwargs["id2label"] = labels
        return cls(**kwargs)

    def to_hf(self):
        """A Hugging Face config dict (model_type "bert"), loadable by transformers."""
        hf = dataclasses.asdict(self)
        names = self.id2label or tuple(f"LABEL_{i}" for i in range(self.num_labels))
        del hf["id2label"], hf["num_labels"]  # transformers derives num_labels from id2label
        hf["id2label"] = {str(i): name for i, name in enumerate(names)}
        hf["label2id"] = {name: i for i, name in enumerate(names)}
        hf["model_type"] = "bert"
        return hf


def num_parameters(config, with_pooler=True):
    """Parameters of BertModel for `config`, counted from the config alone (nothing allocated).

    Embeddings: (V + max_positions + type_vocab) * C, plus LayerNorm 2C.
    Each layer: Q, K, V and the attention output, 4 (C^2 + C); feed-forward 2 C F + F + C;
    two LayerNorms, 4C. Pooler: C^2 + C.

        BertConfig.base()   109,482,240  (108,891,648 without the pooler)  "110M"
        BertConfig.large()  335,141,888  (334,092,288 without the pooler)  "340M"

    Heads add little: MLM transform C^2 + 3C plus the V-bias (the decoder is tied), NSP
    2C + 2, a classifier C * num_labels + num_labels.
    """
    C, F = config.hidden_size, config.intermediate_size
    rows = config.vocab_size + config.max_position_embeddings + config.type_vocab_size
    embeddings = rows * C + 2 * C
    layer = 4 * (C * C + C) + (C * F + F) + (F * C + C) + 2 * 2 * C
    pooler = C * C + C if with_pooler else 0
    return embeddings + config.num_hidden_layers * layer + pooler


# --- building blocks ------------------------------------------------------------------------


class BertEmbeddings(Module):
    """x = LayerNorm(word[ids] + token_type[types] + position[0..T-1]), then dropout."""

    def __init__(self, config, rng):
        C, std = config.hidden_size, config.initializer_range
        # [PAD]'s row starts at zero and gets no gradient (torch's padding_idx), as in HF.
        self.word_embeddings = Embedding(config.vocab_size, C, std=std, rng=rng,
                                         padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, C, std=std,
                                             rng=rng, what="position")
        self.token_type_embeddings = Embedding(config.type_vocab_size, C, std=std, rng=rng,
                                               what="token type id")
        self.LayerNorm = LayerNorm(C, eps=config.layer_norm_eps)  # capitalised as in HF keys
        self.dropout = Dropout(config.hidden_dropout_prob, rng)

    def forward(self, input_ids, token_type_ids):
        T = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        # Absolute positions 0..T-1 are the first T rows: a slice, not a lookup.
        x = x + self.position_embeddings.weight[:T]  # (B, T, C) + (T, C) -> (B, T, C)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(Module):
    """softmax(Q K^T / sqrt(D) + padding bias) V over H heads; no causal mask (an encoder)."""

    def __init__(self, config, rng):
        C, std = config.hidden_size, config.initializer_range
        self.num_heads = config.num_attention_heads
        self.query = Linear(C, C, std=std, rng=rng)
        self.key = Linear(C, C, std=std, rng=rng)
        self.value = Linear(C, C, std=std, rng=rng)
        self.dropout = Dropout(config.attention_probs_dropout_prob, rng)

    def forward(self, x, bias=None):
        q = split_heads(self.query(x), self.num_heads)  # (B, T, C) -> (B, H, T, D)
        k = split_heads(self.key(x), self.num_heads)  # (B, S, C) -> (B, H, S, D)
        v = split_heads(self.value(x), self.num_heads)  # (B, S, C) -> (B, H, S, D)
        y = attention(q, k, v, bias=bias, dropout=self.dropout)  # (B, H, T, D)
        return merge_heads(y)  # (B, H, T, D) -> (B, T, C)


class BertSelfOutput(Module):
    """The attention output projection, then post-LN: LayerNorm(dropout(W y + b) + x)."""

    def __init__(self, config, rng):
        C = config.hidden_size
        self.dense = Linear(C, C, std=config.initializer_range, rng=rng)
        self.LayerNorm = LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob, rng)

    def forward(self, y, x):
        return self.LayerNorm(self.dropout(self.dense(y)) + x)  # (B, T, C)


class BertAttention(Module):
    """Self-attention and its output sublayer, named `self` and `output` as in the keys."""

    def __init__(self, config, rng):
        # An attribute may be called `self`: `self.self` is ordinary attribute access. The
        # odd name is Hugging Face's (attention.self.query.weight), so the keys match.
        self.self = BertSelfAttention(config, rng)
        self.output = BertSelfOutput(config, rng)

    def forward(self, x, bias=None):
        return self.output(self.self(x, bias), x)


class BertIntermediate(Module):
    """The first half of the feed-forward sublayer: GELU(W x + b), (B, T, C) -> (B, T, F)."""

    def __init__(self, config, rng):
        self.dense = Linear(config.hidden_size, config.intermediate_size,
                            std=config.initializer_range, rng=rng)
        self.act = activation(config.hidden_act)  # a function, not a Module: no parameters

    def forward(self, x):
        return self.act(self.dense(x))


class BertOutput(Module):
    """The second half: LayerNorm(dropout(W h + b) + x), (B, T, F) -> (B, T, C)."""

    def __init__(self, config, rng):
        C = config.hidden_size
        self.dense = Linear(config.intermediate_size, C, std=config.initializer_range, rng=rng)
        self.LayerNorm = LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob, rng)

    def forward(self, h, x):
        return self.LayerNorm(self.dropout(self.dense(h)) + x)


class BertLayer(Module):
    """One encoder block, post-LN:
        x = LN(x + Attention(x));  x = LN(x + W2 GELU(W1 x))
    """

    def __init__(self, config, rng):
        self.attention = BertAttention(config, rng)
        self.intermediate = BertIntermediate(config, rng)
        self.output = BertOutput(config, rng)

    def forward(self, x, bias=None):
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class BertEncoder(Module):
    """L blocks in a list, so that their keys are encoder.layer.0, encoder.layer.1, ..."""

    def __init__(self, config, rng):
        self.layer = [BertLayer(config, rng) for _ in range(config.num_hidden_layers)]

    def forward(self, x, bias=None):
        for block in self.layer:
            x = run_block(self, block, x, bias)
        return x


class BertPooler(Module):
    """tanh(W h_[CLS] + b): the first position's vector, pre-trained by next sentence
    prediction, is BERT's summary of the whole input."""

    def __init__(self, config, rng):
        C = config.hidden_size
        self.dense = Linear(C, C, std=config.initializer_range, rng=rng)

    def forward(self, h):
        return tanh(self.dense(h[:, 0]))  # (B, T, C) -> (B, C): position 0 is [CLS]


# --- the backbone ---------------------------------------------------------------------------

# Buffers some checkpoints store next to the weights (arange and zeros): not parameters.
_BUFFERS = (r"(^|\.)embeddings\.position_ids$", r"(^|\.)embeddings\.token_type_ids$")
_POOLER = r"(^|\.)pooler\."


class BertPreTrainedModel(PreTrainedModel):
    """What every BERT class shares: its config class, the backbone's name, ignored keys."""

    config_class = BertConfig
    base_model_prefix = "bert"
    ignore_on_load = _BUFFERS


class BertModel(BertPreTrainedModel):
    """The encoder: ids (B, T) -> last_hidden_state (B, T, C) and pooler_output (B, C).

    forward(input_ids, attention_mask=None, token_type_ids=None):
        input_ids       (B, T) integers in [0, V)
        attention_mask  (B, T) 1 for tokens, 0 for padding; None: attend everywhere
        token_type_ids  (B, T) integers in [0, type_vocab_size); None: all 0 (sentence A)
    Inputs are NumPy (or CuPy) integer arrays, Tensors, or lists.

    `rng` lets a task head share its generator with the backbone it owns; otherwise the
    weights are drawn from `seed`, as Hugging Face initialises them: N(0, initializer_range^2)
    for weights and embeddings, zero biases and [PAD] row, LayerNorm 1 and 0.
    """

    def __init__(self, config, add_pooling_layer=True, seed=0, rng=None):
        rng = np.random.default_rng(seed) if rng is None else rng
        self.config = config
        self.embeddings = BertEmbeddings(config, rng)
        self.encoder = BertEncoder(config, rng)
        self.pooler = BertPooler(config, rng) if add_pooling_layer else None
        if not add_pooling_layer:  # a pre-training checkpoint's pooler is not needed here
            self.ignore_on_load = (*_BUFFERS, _POOLER)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        config = self.config
        input_ids = int_array(input_ids, "input_ids")
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must have shape (B, T) with T >= 1, got "
                             f"{input_ids.shape}")
        B, T = input_ids.shape
        if T > config.max_position_embeddings:
            raise ValueError(f"input_ids has {T} positions but max_position_embeddings is "
                             f"{config.max_position_embeddings}: BERT learned no position "
                             "beyond that; truncate or split the input")
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

        h = self.embeddings(input_ids, token_type_ids)  # (B, T) -> (B, T, C)
        h = self.encoder(h, bias)  # (B, T, C)
        pooled = self.pooler(h) if self.pooler is not None else None  # (B, C)
        return ModelOutput(last_hidden_state=h, pooler_output=pooled)


# --- pre-training heads ------------------------------------------------------------------


class BertPredictionHeadTransform(Module):
    """LayerNorm(GELU(W h + b)): one more dense layer before the vocabulary projection."""

    def __init__(self, config, rng):
        C = config.hidden_size
        self.dense = Linear(C, C, std=config.initializer_range, rng=rng)
        self.act = activation(config.hidden_act)
        self.LayerNorm = LayerNorm(C, eps=config.layer_norm_eps)

    def forward(self, h):
        return self.LayerNorm(self.act(self.dense(h)))


class BertLMPredictionHead(Module):
    """logits = transform(h) @ E^T + bias, (B, T, C) -> (B, T, V), E the word embeddings."""

    def __init__(self, config, word_embeddings, rng):
        self.transform = BertPredictionHeadTransform(config, rng)
        # `bias` is defined before `decoder`, whose bias it also is: a tied Tensor is saved
        # under the first name met, and Hugging Face's checkpoints call it cls.predictions.bias.
        self.bias = Tensor(np.zeros(config.vocab_size, dtype=np.float32), requires_grad=True)
        if not config.tie_word_embeddings:
            # Every published BERT ties them. Untied, transformers 5 also unties the bias and
            # leaves cls.predictions.bias unused (4.x kept it): refused rather than guessed.
            raise ValueError("BERT's MLM head with tie_word_embeddings=False is not "
                             "implemented: the decoder is the word embedding table")
        self.decoder = Linear.tied(word_embeddings.weight, self.bias)  # the (V, C) table

    def forward(self, h):
        return self.decoder(self.transform(h))  # (B, T, C) @ (C, V) -> (B, T, V)


class BertOnlyMLMHead(Module):
    def __init__(self, config, word_embeddings, rng):
        self.predictions = BertLMPredictionHead(config, word_embeddings, rng)


class BertOnlyNSPHead(Module):
    def __init__(self, config, rng):
        self.seq_relationship = Linear(config.hidden_size, 2, std=config.initializer_range,
                                       rng=rng)


class BertPreTrainingHeads(Module):
    """Both objectives' heads under `cls`: predictions (MLM) and seq_relationship (NSP)."""

    def __init__(self, config, word_embeddings, rng):
        self.predictions = BertLMPredictionHead(config, word_embeddings, rng)
        self.seq_relationship = Linear(config.hidden_size, 2, std=config.initializer_range,
                                       rng=rng)


class BertForPreTraining(BertPreTrainedModel):
    """Masked LM + next sentence prediction, the two objectives of section 3.1.

    forward(input_ids, attention_mask, token_type_ids, labels, next_sentence_label):
        labels               (B, T) the original ids at masked positions, -100 elsewhere
        next_sentence_label  (B,) 0: sentence B follows A, 1: B is a random sentence
    -> logits (B, T, V), seq_relationship_logits (B, 2), and with both label sets
       loss = mean MLM cross-entropy + mean NSP cross-entropy.
    """

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.bert = BertModel(config, rng=rng)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings, rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None):
        out = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.cls.predictions(out.last_hidden_state)  # (B, T, V)
        nsp = self.cls.seq_relationship(out.pooler_output)  # (B, C) -> (B, 2)
        loss = None
        if (labels is None) != (next_sentence_label is None):
            # Hugging Face silently returns no loss here; a missing loss is easier to miss.
            raise ValueError("BertForPreTraining: give both labels and next_sentence_label "
                             "for a loss, or neither")
        if labels is not None:
            loss = (cross_entropy(logits, int_array(labels, "labels"))
                    + cross_entropy(nsp, int_array(next_sentence_label, "next_sentence_label")))
        return ModelOutput(loss=loss, logits=logits, seq_relationship_logits=nsp)


class BertForMaskedLM(BertPreTrainedModel):
    """The masked LM alone (no pooler): logits (B, T, V); loss over labels != -100."""

    # The original bert-base/large checkpoints are named BertForMaskedLM but also hold the
    # pooler and the NSP head; like Hugging Face, we load them and drop those weights.
    ignore_on_load = (*_BUFFERS, _POOLER, r"^cls\.seq_relationship\.")

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False, rng=rng)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings, rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        h = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.cls.predictions(h)  # (B, T, C) -> (B, T, V)
        loss = None if labels is None else cross_entropy(logits, int_array(labels, "labels"))
        return ModelOutput(loss=loss, logits=logits)


class BertForNextSentencePrediction(BertPreTrainedModel):
    """NSP alone: logits (B, 2) from the pooled [CLS]; loss with labels (B,)."""

    ignore_on_load = (*_BUFFERS, r"^cls\.predictions\.")  # a pre-training checkpoint's MLM

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.bert = BertModel(config, rng=rng)
        self.cls = BertOnlyNSPHead(config, rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        pooled = self.bert(input_ids, attention_mask, token_type_ids).pooler_output
        logits = self.cls.seq_relationship(pooled)  # (B, C) -> (B, 2)
        loss = None if labels is None else cross_entropy(logits, int_array(labels, "labels"))
        return ModelOutput(loss=loss, logits=logits)


# --- fine-tuning heads (section 4) ---------------------------------------------------------
# RoBERTa and ALBERT fine-tune with these same heads over their own encoders (roberta.py,
# albert.py), as Hugging Face's classes do. A head builds its encoder with `backbone_class`
# under the attribute `base_model_prefix` (`bert` here, `roberta`, `albert`: the first name
# of every checkpoint key) and reaches it as `self.backbone`.


def classifier_dropout(config, rng):
    """The dropout before a classifier: classifier_dropout, or hidden_dropout_prob when None
    (Hugging Face's rule, shared by RoBERTa; ALBERT's config resolves the None itself)."""
    p = config.classifier_dropout
    return Dropout(config.hidden_dropout_prob if p is None else p, rng)


def flatten_choices(input_ids, attention_mask, token_type_ids):
    """Multiple choice's (B, N, T) inputs as B N sequences: (B, N, [three (B N, T) or None]).
    Shape errors beyond the number of axes surface in the backbone."""
    input_ids = int_array(input_ids, "input_ids")
    if input_ids.ndim != 3:
        raise ValueError(f"input_ids must have shape (B, N, T) (batch, choices, length), got "
                         f"{input_ids.shape}")
    B, N, T = input_ids.shape

    def flat(x, name):  # (B, N, T) -> (B N, T)
        return None if x is None else int_array(x, name).reshape(B * N, -1)

    return B, N, [flat(x, name) for x, name in ((input_ids, "input_ids"),
                                                (attention_mask, "attention_mask"),
                                                (token_type_ids, "token_type_ids"))]


class BertTaskHead(BertPreTrainedModel):
    """What the fine-tuning heads share: their encoder, built and reached by name."""

    backbone_class = BertModel

    def add_backbone(self, config, rng, add_pooling_layer=True):
        """Build the encoder under `base_model_prefix` (self.bert = BertModel(...))."""
        encoder = self.backbone_class(config, add_pooling_layer=add_pooling_layer, rng=rng)
        setattr(self, self.base_model_prefix, encoder)

    @property
    def backbone(self):
        return getattr(self, self.base_model_prefix)


class BertForSequenceClassification(BertTaskHead):
    """Sentence(-pair) classification or regression from the pooled [CLS]:
    logits = W dropout(pooler_output) + b, (B, C) -> (B, num_labels).

    The loss follows config.problem_type (npplm.layers.sequence_classification_loss): mean
    squared error, cross-entropy, or binary cross-entropy per class; None: from the labels.
    """

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.add_backbone(config, rng)
        self.dropout = classifier_dropout(config, rng)
        self.classifier = Linear(config.hidden_size, config.num_labels,
                                 std=config.initializer_range, rng=rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        pooled = self.backbone(input_ids, attention_mask, token_type_ids).pooler_output
        logits = self.classifier(self.dropout(pooled))  # (B, C) -> (B, num_labels)
        loss = None if labels is None else sequence_classification_loss(
            logits, labels, self.config.num_labels, self.config.problem_type)
        return ModelOutput(loss=loss, logits=logits)


class BertForMultipleChoice(BertTaskHead):
    """One score per (context, choice) pair, softmaxed over the N choices (SWAG).

    Inputs are (B, N, T): each choice is encoded separately; logits (B, N); labels (B,).
    """

    choice_dropout = staticmethod(classifier_dropout)  # RoBERTa's differs

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.add_backbone(config, rng)
        self.dropout = self.choice_dropout(config, rng)
        self.classifier = Linear(config.hidden_size, 1, std=config.initializer_range, rng=rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        B, N, flat = flatten_choices(input_ids, attention_mask, token_type_ids)
        pooled = self.backbone(*flat).pooler_output  # (B N, T) -> (B N, C)
        logits = self.classifier(self.dropout(pooled)).reshape(B, N)  # (B N, 1) -> (B, N)
        loss = None if labels is None else cross_entropy(logits, int_array(labels, "labels"))
        return ModelOutput(loss=loss, logits=logits)


class BertForTokenClassification(BertTaskHead):
    """A label per position (NER, POS tagging): logits (B, T, num_labels), no pooler;
    labels (B, T) with -100 at positions to ignore (padding, word-piece continuations)."""

    ignore_on_load = (*_BUFFERS, _POOLER)

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.add_backbone(config, rng, add_pooling_layer=False)
        self.dropout = classifier_dropout(config, rng)
        self.classifier = Linear(config.hidden_size, config.num_labels,
                                 std=config.initializer_range, rng=rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        h = self.backbone(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.classifier(self.dropout(h))  # (B, T, C) -> (B, T, num_labels)
        loss = None
        if labels is not None:  # flat, as the reference: (B T, num_labels) against (B T,)
            loss = cross_entropy(logits.reshape(-1, self.config.num_labels),
                                 int_array(labels, "labels").reshape(-1))
        return ModelOutput(loss=loss, logits=logits)


class BertForQuestionAnswering(BertTaskHead):
    """Extractive QA (SQuAD): a start and an end score per position, (B, T, C) -> (B, T) x 2.

    The answer is the span [argmax start, argmax end] of the passage. The loss is Hugging
    Face's (npplm.layers.span_extraction_loss): (CE(start) + CE(end)) / 2.
    """

    ignore_on_load = (*_BUFFERS, _POOLER)

    def __init__(self, config, seed=0):
        if config.num_labels != 2:
            raise ValueError(f"{type(self).__name__} needs num_labels=2 (start and end), got "
                             f"{config.num_labels}")
        rng = np.random.default_rng(seed)
        self.config = config
        self.add_backbone(config, rng, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, 2, std=config.initializer_range, rng=rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None,
                start_positions=None, end_positions=None):
        h = self.backbone(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.qa_outputs(h)  # (B, T, C) -> (B, T, 2)
        start, end = logits[..., 0], logits[..., 1]  # (B, T, 2) -> (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_extraction_loss(start, end, start_positions, end_positions)
        return ModelOutput(loss=loss, start_logits=start, end_logits=end)
