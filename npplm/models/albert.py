"""ALBERT: BERT with a factorised embedding, one set of layer weights reused, and SOP.

Paper: Lan, Chen, Goodman, Gimpel, Sharma, Soricut, "ALBERT: A Lite BERT for Self-supervised
Learning of Language Representations", ICLR 2020, arXiv:1909.11942.
Reference implementation matched here: Hugging Face transformers,
`models/albert/modeling_albert.py` (checked against 5.23 with eager attention; the original
TensorFlow code is google-research/albert). Parameter names are that file's checkpoint keys.

What is different from GPT-2 (the baseline read first) -- the BERT part:
  - An encoder: every position attends to every other (no causal mask), only padding is
    masked; trained by masked language modelling instead of next-token prediction.
  - Post-norm residual blocks, LayerNorm(x + sublayer(x)), as in the original Transformer;
    GPT-2 normalises before each sublayer.
  - Learned token-type ("segment") embeddings for sentence pairs; a tanh pooler over the
    first token feeds sentence-level heads.
What is different from BERT -- the three ALBERT changes (section 3.1 of the paper):
  1. Factorised embedding parameters. Tokens are looked up in a narrow V x E table and then
     projected to the model width C by one E -> C linear map
     (`encoder.embedding_hidden_mapping_in`): V*E + E*C parameters instead of V*C, which
     for V = 30000, E = 128, C = 4096 is 4.4M instead of 123M. The MLM head mirrors it:
     C -> E, then the tied V x E table decodes.
  2. Cross-layer parameter sharing. The encoder stores `num_hidden_groups` groups of layers
     (1 in every published model) and applies L = `num_hidden_layers` layers by reusing
     them: layer i runs group int(i / (L / num_hidden_groups)). Here the very same Module
     objects are called again, so the engine adds the gradient of every use into the one
     parameter, exactly as autograd's fan-out rule says. Parameters shrink L-fold; compute
     does not (ALBERT-xxlarge does as much arithmetic per token as a 12-layer, 4096-wide
     BERT would).
  3. Sentence-order prediction (SOP) instead of next-sentence prediction: the two segments
     are consecutive text, either in order (label 0) or swapped (label 1), so the task
     cannot be solved by topic alone. Architecturally it is still a linear layer on the
     pooled first token (`sop_classifier.classifier`).
Smaller details (from the reference code, not the paper): the activation is "gelu_new"
(GPT-2's tanh approximation) in the v2 checkpoints; v2 checkpoints use no dropout; and the
feed-forward output gets no dropout before its residual LayerNorm even when
hidden_dropout_prob > 0 (Hugging Face's AlbertLayer defines one and never calls it).

Parameter counts of the backbone (AlbertModel, pooler included), from `num_parameters`,
equal to transformers' count; the paper's Table 1 rounds them to 12M, 18M, 60M and 235M:
    base()     11,683,584        xlarge()   58,724,864
    large()    17,683,968        xxlarge() 222,595,584
(The paper's 235M for xxlarge is about 12M above what its own shapes give: 222.6M is what
both implementations hold. The 12M-parameter base is a ninth of BERT-base's 110M.)

Glossary: B batch, T sequence length, S key length (= T: self-attention), C model width
(`hidden_size`), E embedding width (`embedding_size`), H attention heads, D head dim C / H,
F feed-forward width (`intermediate_size`), V vocabulary, L layers applied.
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
from npplm.models.bert import (
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from npplm.models.output import ModelOutput

# --- configuration ---------------------------------------------------------------------------

PROBLEM_TYPES = (None, "regression", "single_label_classification",
                 "multi_label_classification")


@dataclass(frozen=True)
class AlbertConfig:
    """The shape and hyper-parameters of an ALBERT model; field names are Hugging Face's.

    The defaults are transformers' AlbertConfig defaults (the xxlarge shape), so a
    config.json that leaves a key out means here what it means to transformers.
    """

    vocab_size: int = 30000  # V: SentencePiece vocabulary of the published models
    embedding_size: int = 128  # E: width of the token table, E << C (change 1)
    hidden_size: int = 4096  # C: width of the Transformer layers
    num_hidden_layers: int = 12  # L: layers applied, not layers stored
    num_hidden_groups: int = 1  # parameter sets stored; 1 = every layer shares (change 2)
    num_attention_heads: int = 64  # H; D = C / H
    intermediate_size: int = 16384  # F: feed-forward width
    inner_group_num: int = 1  # layers inside one group, applied one after the other
    hidden_act: str = "gelu_new"  # encoder and MLM-head activation (GPT-2's tanh GELU)
    hidden_dropout_prob: float = 0.0  # after embeddings and attention output (v2: 0)
    attention_probs_dropout_prob: float = 0.0  # on the attention probabilities (v2: 0)
    classifier_dropout_prob: float | None = 0.1  # before task classifiers; None = hidden's
    max_position_embeddings: int = 512  # longest sequence (learned absolute positions)
    type_vocab_size: int = 2  # token types: segment A and B
    layer_norm_eps: float = 1e-12  # inside the sqrt of every LayerNorm
    initializer_range: float = 0.02  # std of the normal initialisation of weights
    pad_token_id: int | None = 0  # its embedding row gets no gradient (nn.Embedding's rule)
    bos_token_id: int | None = 2  # kept for the round trip; unused by the model
    eos_token_id: int | tuple[int, ...] | None = 3  # ditto
    tie_word_embeddings: bool = True  # MLM decoder reuses the V x E token table and bias
    num_labels: int = 2  # outputs of classification heads (SOP: 2; QA: start and end)
    problem_type: str | None = None  # sequence classification loss; None = inferred

    def __post_init__(self):
        check_positive_ints(self, "vocab_size", "embedding_size", "hidden_size",
                            "num_hidden_layers", "num_hidden_groups", "num_attention_heads",
                            "intermediate_size", "inner_group_num", "max_position_embeddings",
                            "type_vocab_size", "num_labels")
        check_divides(self, "hidden_size", "num_attention_heads")
        if self.num_hidden_groups > self.num_hidden_layers:
            raise ValueError(f"AlbertConfig: num_hidden_groups={self.num_hidden_groups} > "
                             f"num_hidden_layers={self.num_hidden_layers}: some groups would "
                             "never be used")
        activation(self.hidden_act)  # raises ValueError naming the known activations
        check_probabilities(self, "hidden_dropout_prob", "attention_probs_dropout_prob")
        if self.classifier_dropout_prob is not None:
            check_probabilities(self, "classifier_dropout_prob")
        check_token_ids(self, "pad_token_id", optional=True)
        check_scales(self, positive=["layer_norm_eps"])
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"AlbertConfig: problem_type={self.problem_type!r}; use one of "
                             f"{PROBLEM_TYPES}")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads  # D

    @property
    def classifier_dropout(self):
        """The dropout before classifiers (token classification falls back to hidden's)."""
        p = self.classifier_dropout_prob
        return self.hidden_dropout_prob if p is None else p

    # Published sizes (Table 1 of the paper, the shapes of the albert-*-v2 checkpoints).
    # All use E = 128, V = 30000 and one group shared by every layer.
    @classmethod
    def base(cls, **overrides):
        return cls(**{**dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072), **overrides})

    @classmethod
    def large(cls, **overrides):
        return cls(**{**dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096), **overrides})

    @classmethod
    def xlarge(cls, **overrides):
        return cls(**{**dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=8192), **overrides})

    @classmethod
    def xxlarge(cls, **overrides):
        # 12 layers only, but 4096 wide: the best model in the paper.
        return cls(**{**dict(hidden_size=4096, num_hidden_layers=12, num_attention_heads=64,
                             intermediate_size=16384), **overrides})

    @classmethod
    def tiny(cls, **overrides):
        """For tests: E < C and four layers sharing one group, as the real models do."""
        return cls(**{**dict(vocab_size=99, embedding_size=16, hidden_size=32,
                             num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
                             max_position_embeddings=64), **overrides})

    # --- Hugging Face config.json ----------------------------------------------------------
    @classmethod
    def from_hf(cls, hf):
        """From a transformers config dict; keys we do not model (architectures, dtype,
        transformers_version, ...) are ignored. `num_labels` comes from id2label as there."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in names}
        if hf.get("id2label"):
            kwargs["num_labels"] = len(hf["id2label"])
        if isinstance(kwargs.get("eos_token_id"), list):
            kwargs["eos_token_id"] = tuple(kwargs["eos_token_id"])  # frozen: no lists
        return cls(**kwargs)

    def to_hf(self):
        """A config.json dict that transformers' AlbertConfig reads back to the same model."""
        hf = dataclasses.asdict(self)
        n = hf.pop("num_labels")
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}  # how transformers stores it
        hf["label2id"] = {f"LABEL_{i}": i for i in range(n)}
        if isinstance(hf["eos_token_id"], tuple):
            hf["eos_token_id"] = list(hf["eos_token_id"])
        hf["model_type"] = "albert"
        return hf


def group_of_layer(i, config):
    """Which stored group layer i (0-based) runs: int(i / (L / groups)).

    Written with the same float arithmetic as the reference (and the original TF code), so
    that odd splits such as L = 3 over 2 groups give the same answer: groups 0, 0, 1.
    """
    return int(i / (config.num_hidden_layers / config.num_hidden_groups))


def num_parameters(config, architecture="AlbertModel"):
    """The parameter count of `architecture` (a class name below) without allocating.

    Tied weights count once, as `Module.num_parameters()` and transformers count them.
    """
    V, E, C, F = (config.vocab_size, config.embedding_size, config.hidden_size,
                  config.intermediate_size)
    n_labels = config.num_labels
    embeddings = (V + config.max_position_embeddings + config.type_vocab_size) * E + 2 * E
    layer = (4 * (C * C + C) + 2 * C  # query, key, value, dense; attention LayerNorm
             + (C * F + F) + (F * C + C) + 2 * C)  # ffn, ffn_output; full_layer_layer_norm
    # Only num_hidden_groups * inner_group_num layers are stored, however many are applied.
    encoder = (E * C + C) + config.num_hidden_groups * config.inner_group_num * layer
    pooler = C * C + C
    mlm = (C * E + E) + 2 * E + V  # dense C -> E, LayerNorm(E), bias; decoder = token table
    if not config.tie_word_embeddings:
        mlm += V * E + V  # a decoder of its own (predictions.bias then sits unused)
    backbone = embeddings + encoder
    heads = {
        "AlbertModel": pooler,
        "AlbertForPreTraining": pooler + mlm + (C * n_labels + n_labels),
        "AlbertForMaskedLM": mlm,
        "AlbertForSequenceClassification": pooler + (C * n_labels + n_labels),
        "AlbertForMultipleChoice": pooler + (C + 1),
        "AlbertForTokenClassification": C * n_labels + n_labels,
        "AlbertForQuestionAnswering": C * n_labels + n_labels,
    }
    if architecture not in heads:
        raise ValueError(f"num_parameters: unknown architecture {architecture!r}; known: "
                         f"{', '.join(heads)}")
    return backbone + heads[architecture]


# --- the backbone ----------------------------------------------------------------------------


class AlbertEmbeddings(Module):
    """token + token type + position, each E wide, then LayerNorm and dropout: (B, T) ->
    (B, T, E). Still E wide: the encoder projects to C (change 1)."""

    def __init__(self, config, rng):
        std = config.initializer_range
        # PyTorch's nn.Embedding(padding_idx=pad): the padding row starts at zero and
        # gets no gradient, so it never trains.
        self.word_embeddings = Embedding(config.vocab_size, config.embedding_size, std, rng,
                                         what="token id", padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings,
                                             config.embedding_size, std, rng, what="position")
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.embedding_size,
                                               std, rng, what="token type id")
        self.LayerNorm = LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob, rng)
        self.max_positions = config.max_position_embeddings

    def forward(self, input_ids, token_type_ids=None):
        B, T = input_ids.shape
        if T > self.max_positions:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings="
                             f"{self.max_positions}, the longest this model has positions for")
        if token_type_ids is None:
            token_type_ids = np.zeros((B, T), dtype=np.int64)  # everything is segment A
        elif token_type_ids.shape != (B, T):
            raise ValueError(f"token_type_ids has shape {token_type_ids.shape} but the input "
                             f"ids have {(B, T)}: they must be equal")
        words = self.word_embeddings(input_ids)  # (B, T) -> (B, T, E)
        types = self.token_type_embeddings(token_type_ids)  # (B, T) -> (B, T, E)
        positions = self.position_embeddings(np.arange(T))  # (T,) -> (T, E), broadcast over B
        x = words + types + positions  # the reference's order of additions
        return self.dropout(self.LayerNorm(x))


class AlbertAttention(Module):
    """Self-attention with its own residual and LayerNorm, as in BERT (post-norm):
    LayerNorm(x + dense(attention(query x, key x, value x))), (B, T, C) -> (B, T, C)."""

    def __init__(self, config, rng):
        C, std = config.hidden_size, config.initializer_range
        self.num_heads = config.num_attention_heads
        self.query = Linear(C, C, std=std, rng=rng)
        self.key = Linear(C, C, std=std, rng=rng)
        self.value = Linear(C, C, std=std, rng=rng)
        self.dense = Linear(C, C, std=std, rng=rng)
        self.LayerNorm = LayerNorm(C, eps=config.layer_norm_eps)
        self.attention_dropout = Dropout(config.attention_probs_dropout_prob,
                                         rng)
        self.output_dropout = Dropout(config.hidden_dropout_prob, rng)

    def forward(self, x, bias=None):
        q = split_heads(self.query(x), self.num_heads)  # (B, T, C) -> (B, H, T, D)
        k = split_heads(self.key(x), self.num_heads)  # (B, S, C) -> (B, H, S, D)
        v = split_heads(self.value(x), self.num_heads)  # (B, S, C) -> (B, H, S, D)
        context = attention(q, k, v, bias=bias, dropout=self.attention_dropout)  # (B, H, T, D)
        out = self.dense(merge_heads(context))  # (B, H, T, D) -> (B, T, C) -> (B, T, C)
        return self.LayerNorm(x + self.output_dropout(out))


class AlbertLayer(Module):
    """One Transformer layer: attention block, then the feed-forward block
    LayerNorm(a + ffn_output(act(ffn(a)))), (B, T, C) -> (B, T, C)."""

    def __init__(self, config, rng):
        C, F, std = config.hidden_size, config.intermediate_size, config.initializer_range
        self.full_layer_layer_norm = LayerNorm(C, eps=config.layer_norm_eps)
        self.attention = AlbertAttention(config, rng)
        self.ffn = Linear(C, F, std=std, rng=rng)
        self.ffn_output = Linear(F, C, std=std, rng=rng)
        self.act = activation(config.hidden_act)

    def forward(self, x, bias=None):
        a = self.attention(x, bias)  # (B, T, C)
        h = self.ffn_output(self.act(self.ffn(a)))  # (B, T, C) -> (B, T, F) -> (B, T, C)
        # No dropout on h: the reference defines one here but never applies it.
        return self.full_layer_layer_norm(h + a)


class AlbertLayerGroup(Module):
    """`inner_group_num` layers applied in sequence; one group is one shared parameter set
    (a list attribute, so keys read `albert_layers.0.…` as in the checkpoints)."""

    def __init__(self, config, rng):
        self.albert_layers = [AlbertLayer(config, rng) for _ in range(config.inner_group_num)]

    def forward(self, x, bias=None):
        for layer in self.albert_layers:
            x = run_block(self, layer, x, bias)
        return x


class AlbertTransformer(Module):
    """The E -> C projection of change 1, then L layers drawn from the shared groups
    (change 2): (B, T, E) -> (B, T, C)."""

    def __init__(self, config, rng):
        self.config = config
        self.embedding_hidden_mapping_in = Linear(config.embedding_size, config.hidden_size,
                                                  std=config.initializer_range, rng=rng)
        self.albert_layer_groups = [AlbertLayerGroup(config, rng)
                                    for _ in range(config.num_hidden_groups)]

    def forward(self, x, bias=None):
        x = self.embedding_hidden_mapping_in(x)  # (B, T, E) @ (E, C) -> (B, T, C)
        for i in range(self.config.num_hidden_layers):
            # The same group object is called for many i: its parameters are used many
            # times in one graph, and backward sums their gradients over the uses.
            x = self.albert_layer_groups[group_of_layer(i, self.config)](x, bias)
        return x


class AlbertPreTrainedModel(PreTrainedModel):
    """What every ALBERT class shares: the config class, the backbone's attribute name, and
    the checkpoint keys that are buffers, not weights (older checkpoints saved them)."""

    config_class = AlbertConfig
    base_model_prefix = "albert"
    ignore_on_load = (r"embeddings\.position_ids$", r"embeddings\.token_type_ids$")


class AlbertModel(AlbertPreTrainedModel):
    """Embeddings, encoder and (optionally) the tanh pooler over the first token.

    forward(input_ids (B, T), attention_mask (B, T) of 1 = attend / 0 = padding,
    token_type_ids (B, T)) -> ModelOutput(last_hidden_state (B, T, C), pooler_output (B, C)).
    Heads that do not use the pooled token build it without a pooler, as the reference
    does, so their checkpoints have no `albert.pooler` keys.
    """

    def __init__(self, config, add_pooling_layer=True, seed=0, rng=None):
        rng = np.random.default_rng(seed) if rng is None else rng
        self.config = config
        self.embeddings = AlbertEmbeddings(config, rng)
        self.encoder = AlbertTransformer(config, rng)
        self.pooler = (Linear(config.hidden_size, config.hidden_size,
                              std=config.initializer_range, rng=rng)
                       if add_pooling_layer else None)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        input_ids = int_array(input_ids, "input_ids")
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got shape "
                             f"{input_ids.shape}")
        if token_type_ids is not None:
            token_type_ids = int_array(token_type_ids, "token_type_ids")
        B, T = input_ids.shape
        if attention_mask is not None:
            check_attention_mask(attention_mask, B, T)  # (B, T) of 1/0
        # Padding keys are skipped by the fused attention, or get the additive bias (0 for
        # tokens, the dtype's min for padding) where it does not run (npplm.layers.masks).
        bias = PaddingMask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T) -> (B, T, E)
        x = self.encoder(x, bias)  # (B, T, E) -> (B, T, C)
        pooled = None
        if self.pooler is not None:
            pooled = tanh(self.pooler(x[:, 0]))  # (B, C): the first ([CLS]) token
        return ModelOutput(last_hidden_state=x, pooler_output=pooled)


# --- task heads ------------------------------------------------------------------------------


class AlbertMLMHead(Module):
    """Masked-LM head: C -> E, activation, LayerNorm, then decode with the E-wide token table
    (tied) plus a bias: (B, T, C) -> (B, T, V). The factorisation again, in reverse."""

    def __init__(self, config, word_embeddings, rng):
        E, V = config.embedding_size, config.vocab_size
        self.LayerNorm = LayerNorm(E, eps=config.layer_norm_eps)
        self.bias = Tensor(np.zeros(V, dtype=np.float32), requires_grad=True)
        self.dense = Linear(config.hidden_size, E, std=config.initializer_range, rng=rng)
        self.decoder = Linear(E, V, std=config.initializer_range, rng=rng)
        if config.tie_word_embeddings:
            # One Tensor under two names each: the checkpoint stores the first name met
            # (albert.embeddings.word_embeddings.weight, predictions.bias), as transformers'.
            self.decoder.weight = word_embeddings.weight  # (V, E)
            self.decoder.bias = self.bias
        self.act = activation(config.hidden_act)

    def forward(self, x):
        h = self.LayerNorm(self.act(self.dense(x)))  # (B, T, C) -> (B, T, E)
        return self.decoder(h)  # (B, T, E) @ (E, V) -> (B, T, V)


class AlbertSOPHead(Module):
    """Sentence-order prediction (change 3): dropout, then linear on the pooled token:
    (B, C) -> (B, num_labels); label 0 = segments in order, 1 = swapped."""

    def __init__(self, config, rng):
        self.dropout = Dropout(config.classifier_dropout, rng)
        self.classifier = Linear(config.hidden_size, config.num_labels,
                                 std=config.initializer_range, rng=rng)

    def forward(self, pooled):
        return self.classifier(self.dropout(pooled))


class AlbertForPreTraining(AlbertPreTrainedModel):
    """The pre-training model: masked LM plus SOP, loss = MLM cross-entropy + SOP
    cross-entropy (when both `labels` and `sentence_order_label` are given).

    labels (B, T): the token to predict, -100 where nothing is predicted;
    sentence_order_label (B,): 0 in order, 1 swapped.
    Returns logits (B, T, V) and seq_relationship_logits (B, 2) (the SOP logits).
    """

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.albert = AlbertModel(config, rng=rng)
        self.predictions = AlbertMLMHead(config, self.albert.embeddings.word_embeddings, rng)
        self.sop_classifier = AlbertSOPHead(config, rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                sentence_order_label=None):
        out = self.albert(input_ids, attention_mask, token_type_ids)
        logits = self.predictions(out.last_hidden_state)  # (B, T, V)
        sop_logits = self.sop_classifier(out.pooler_output)  # (B, 2)
        loss = None
        if labels is not None and sentence_order_label is not None:
            mlm = cross_entropy(logits, int_array(labels, "labels"), ignore_index=-100)
            order = int_array(sentence_order_label, "sentence_order_label").reshape(-1)
            sop = cross_entropy(sop_logits, order)
            loss = mlm + sop
        return ModelOutput(loss=loss, logits=logits, seq_relationship_logits=sop_logits)


class AlbertForMaskedLM(AlbertPreTrainedModel):
    """Backbone without pooler + MLM head; loss = cross-entropy over positions whose label
    is not -100. Returns logits (B, T, V)."""

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)
        self.config = config
        self.albert = AlbertModel(config, add_pooling_layer=False, rng=rng)
        self.predictions = AlbertMLMHead(config, self.albert.embeddings.word_embeddings, rng)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        out = self.albert(input_ids, attention_mask, token_type_ids)
        logits = self.predictions(out.last_hidden_state)  # (B, T, C) -> (B, T, V)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits, int_array(labels, "labels"), ignore_index=-100)
        return ModelOutput(loss=loss, logits=logits)


# The fine-tuning heads are BERT's (npplm/models/bert.py), over ALBERT's encoder.


class AlbertForSequenceClassification(AlbertPreTrainedModel, BertForSequenceClassification):
    """Pooled first token -> dropout -> linear: logits (B, num_labels); the loss by
    config.problem_type (npplm.layers.sequence_classification_loss)."""

    backbone_class = AlbertModel


class AlbertForMultipleChoice(AlbertPreTrainedModel, BertForMultipleChoice):
    """Each of N choices scored from its pooled token: input_ids (B, N, T) run as B N
    sequences; logits (B, N); labels (B,) name the right choice."""

    backbone_class = AlbertModel


class AlbertForTokenClassification(AlbertPreTrainedModel, BertForTokenClassification):
    """Every position -> dropout -> linear: logits (B, T, num_labels); labels (B, T) with
    -100 where ignored."""

    backbone_class = AlbertModel


class AlbertForQuestionAnswering(AlbertPreTrainedModel, BertForQuestionAnswering):
    """Extractive QA: start_logits and end_logits (B, T); the loss is
    npplm.layers.span_extraction_loss."""

    backbone_class = AlbertModel
