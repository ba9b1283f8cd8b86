"""What every model family shares: the checkpoint base class and config validation.

`PreTrainedModel` is the base of every model class that can be saved and loaded. A family
sets three class attributes:
    config_class       its frozen config dataclass, with `from_hf(dict)` and `to_hf()`
    base_model_prefix  the attribute holding the backbone in task heads ("bert", ...),
                       added to or stripped from keys when a head loads a bare backbone
                       checkpoint or the other way round, as transformers does
    ignore_on_load     regexes of checkpoint keys that are not weights (buffers such as
                       `embeddings.position_ids`)
Parameter names mirror the family's checkpoint keys, so loading is an identity map; a
family whose checkpoints store some weights differently (GPT-2's transposed Conv1D
weights) overrides `load_weights` and `checkpoint_state`, nothing else.

Decoders also say the shape of their KV cache (`kv_cache_layout`), from which `new_cache`
builds one on the right device (npplm.generation). SequenceClassifierMixin (at the end) is
the score head a decoder gets as a classifier or a reward model (GPT-2, LLaMA).

Devices. Integer bookkeeping (ids, positions, masks) is done on the host, in NumPy; a model
moves what it computes from it to its weights' device with one `self.xp.asarray` where it
meets the weights. `xp` and `dtype` below say where and what the weights are.

The files themselves (safetensors, config.json, shards) are read and written by npplm.io;
`npplm.from_pretrained` (npplm/models/__init__.py) picks the class a folder names.
"""

import dataclasses
import re

import numpy as np

from autograd import array_module, to_numpy
from npplm.generation.kv_cache import new_kv_cache
from npplm.io import CheckpointError, read_config, read_weights, write_pretrained
from npplm.layers import Module, int_array, sequence_classification_loss
from npplm.models.output import ModelOutput


class PreTrainedModel(Module):
    """A Module with a config, loadable from and savable to Hugging Face folders."""

    config_class = None
    base_model_prefix = ""
    ignore_on_load = ()

    @property
    def dtype(self):
        """The float dtype of the weights (float32 unless cast with `astype`)."""
        return next(p for _, p in self.named_parameters()).dtype

    @property
    def xp(self):
        """The array module of the weights: numpy, or cupy on the GPU."""
        return array_module(next(p for _, p in self.named_parameters()).data)

    @property
    def context_length(self):
        """The most positions the model reads at once (prompt and reply together), from
        its config's position limit; None when it has none (T5's relative positions)."""
        for name in ("n_positions", "max_position_embeddings", "max_sequence_length"):
            value = getattr(self.config, name, None)
            if value:
                return int(value)
        return None

    def kv_cache_layout(self):
        """(L, K, D): the layers that write to a KV cache, their key/value heads and head
        dim. Defined by the families that decode with one (GPT, LLaMA, GLM)."""
        raise NotImplementedError(f"{type(self).__name__} does not decode with a KV cache")

    def new_cache(self, batch_size, max_length, dtype=None):
        """An empty KV cache for batch_size rows of up to max_length positions, on the
        weights' device (npplm.generation.kv_cache). dtype, what it stores: None the
        weights' dtype, "float16" / "float32" that float, "int8" codes and a scale per
        vector (Int8KVCache, about half a float16 cache; it returns the weights' dtype)."""
        n_layers, n_kv_heads, head_dim = self.kv_cache_layout()
        return new_kv_cache(dtype, n_layers, batch_size, n_kv_heads, head_dim, max_length,
                            self.dtype, xp=self.xp)

    def load_weights(self, state):
        """Load {checkpoint key: array}, adapting the backbone prefix; errors name keys."""
        state = {k: v for k, v in state.items()
                 if not any(re.search(p, k) for p in self.ignore_on_load)}
        own = dict(self._all_named_parameters())
        prefix = self.base_model_prefix + "." if self.base_model_prefix else ""
        if prefix:
            has_prefix = any(k.startswith(prefix) for k in own)
            ckpt_prefix = any(k.startswith(prefix) for k in state)
            if has_prefix and not ckpt_prefix:  # a head loading a bare backbone checkpoint
                state = {prefix + k: v for k, v in state.items()}
            elif ckpt_prefix and not has_prefix:  # a backbone loading a head's checkpoint
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        # A tied parameter needs one of its names in the checkpoint, not all of them.
        loaded = {id(own[k]) for k in own if k in state}
        missing = sorted(k for k, p in own.items() if k not in state and id(p) not in loaded)
        unexpected = sorted(k for k in state if k not in own)
        if missing or unexpected:
            raise CheckpointError(f"checkpoint does not fit {type(self).__name__}: missing "
                                  f"keys {missing}, unexpected keys {unexpected}")
        for k, p in own.items():
            if k in state and tuple(state[k].shape) != p.shape:
                raise CheckpointError(f"{k!r} has shape {tuple(state[k].shape)} in the "
                                      f"checkpoint but {p.shape} in the model")
        self.load_state_dict(state, strict=False)
        return self

    def checkpoint_state(self):
        """{checkpoint key: array} as the family's checkpoints store it, tied weights once."""
        return self.state_dict(remove_duplicates=True)

    def save_pretrained(self, directory):
        """Write config.json and model.safetensors (tied weights once), loadable by HF."""
        config = {**self.config.to_hf(), "architectures": [type(self).__name__]}
        write_pretrained(directory, config, self.checkpoint_state())

    @classmethod
    def from_pretrained(cls, directory):
        """Build this class from a checkpoint folder's config and load its weights."""
        config = cls.config_class.from_hf(read_config(directory))
        model = cls(config)
        return model.load_weights(read_weights(directory)).eval()


# --- config validation -----------------------------------------------------------------------


def check_positive_ints(config, *names):
    """Raise ValueError naming the first field of `names` that is not a positive integer."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name}={value!r} must be a positive "
                             "integer")


def check_optional_positive_int(config, name):
    """Raise ValueError unless the field is None or a positive integer."""
    value = getattr(config, name)
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{type(config).__name__}.{name}={value!r} must be None or a "
                         "positive integer")


def check_divides(config, whole, part):
    """Raise ValueError unless field `part` divides field `whole` (heads split the width)."""
    if getattr(config, whole) % getattr(config, part):
        raise ValueError(f"{type(config).__name__}: {whole}={getattr(config, whole)} is not "
                         f"divisible by {part}={getattr(config, part)}")


def check_scales(config, positive=(), non_negative=()):
    """Raise ValueError naming the first field that is not > 0 (an epsilon, a base) among
    `positive`, or < 0 (an initialisation std) among `non_negative`."""
    for name in positive:
        if not getattr(config, name) > 0:
            raise ValueError(f"{type(config).__name__}.{name}={getattr(config, name)} must "
                             "be > 0")
    for name in non_negative:
        if not getattr(config, name) >= 0:
            raise ValueError(f"{type(config).__name__}.{name}={getattr(config, name)} must "
                             "be >= 0")


def check_token_ids(config, *names, optional=False):
    """Raise ValueError naming the first field of `names` that is not a token id in
    [0, vocab_size) (None is allowed when optional: a model without that token)."""
    for name in names:
        value = getattr(config, name)
        if optional and value is None:
            continue
        if not isinstance(value, int) or not 0 <= value < config.vocab_size:
            raise ValueError(f"{type(config).__name__}.{name}={value!r} is outside the "
                             f"vocabulary (vocab_size={config.vocab_size})")


def check_probabilities(config, *names):
    """Raise ValueError naming the first field of `names` outside [0, 1) (dropout rates)."""
    for name in names:
        p = getattr(config, name)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{type(config).__name__}.{name}={p} must be in [0, 1)")


# --- sequence classification: the reward models' head ---------------------------------------


def num_labels_from_hf(hf):
    """The number of classes in a Hugging Face config dict.

    transformers keeps no `num_labels` key: it is the length of `id2label`, which
    `save_pretrained` omits at the default of 2 classes (a `num_labels` key passed to a
    config constructor is honoured too).
    """
    return len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 2)


def num_labels_to_hf(num_labels):
    """The config.json keys that say `num_labels` as transformers writes them: id2label and
    label2id with default names LABEL_i, and nothing at the default of 2."""
    if num_labels == 2:
        return {}
    names = [f"LABEL_{i}" for i in range(num_labels)]
    return {"id2label": {str(i): name for i, name in enumerate(names)},
            "label2id": {name: i for i, name in enumerate(names)}}


def last_token_positions(input_ids, pad_token_id):
    """(B,) the position of each row's last token that is not padding, found as transformers'
    *ForSequenceClassification finds it (GPT-2, LLaMA and every decoder since 5.x):

        last[b] = argmax_t  t * [ids[b, t] != pad_token_id]

    the rightmost non-pad token, so right and left padding both work; a row of padding only
    gives 0. The attention mask is not consulted: a pad id inside a row (GPT-2 setups that pad
    with <|endoftext|>) counts as padding, a real token after it does not. Without a pad token
    the last position is taken, which is only right for a single row (B = 1): transformers
    refuses larger batches then, and so do we.
    """
    ids = to_numpy(int_array(input_ids, "input_ids"))  # (B, T), host bookkeeping
    B, T = ids.shape
    if pad_token_id is None:
        if B != 1:
            raise ValueError(f"a batch of {B} rows needs config.pad_token_id to find each row's "
                             "last token; without one only a single unpadded row can be scored")
        return np.array([T - 1])
    return (np.arange(T) * (ids != pad_token_id)).argmax(axis=-1)  # (B,)


class SequenceClassifierMixin:
    """A decoder read out at its last token: logits = score(h[b, last[b]]), (B, num_labels).

    What GPT2ForSequenceClassification and LlamaForSequenceClassification share; the class
    that mixes it in builds `score` (no bias, (num_labels, C), as Hugging Face's) and the
    backbone under `base_model_prefix` ("transformer", "model"). A causal decoder's last real
    token is the only one that has read the whole sequence, so it is the one scored. With
    num_labels = 1 this is the reward model of InstructGPT (Ouyang et al. 2022, arXiv:2203.02155,
    section 3.5) and of TRL's RewardTrainer: one scalar r(x, y) per sequence.

    Loading: `npplm.from_pretrained` loads a classifier's own checkpoint (score.weight
    included); a causal LM's checkpoint has no score.weight, and `from_backbone` turns it
    (or an LM object) into a classifier with a freshly drawn score layer.
    """

    @property
    def backbone(self):
        return getattr(self, self.base_model_prefix)

    def forward(self, input_ids, attention_mask=None, labels=None, position_ids=None):
        """-> ModelOutput(logits (B, num_labels), loss when labels are given).

        input_ids (B, T), attention_mask (B, T) and position_ids as for the backbone; the
        scored position of each row comes from config.pad_token_id (last_token_positions).
        labels: (B,) floats for num_labels = 1 (regression: mean squared error, as Hugging
        Face), class ids (B,) or multi-label 0/1 (B, num_labels) otherwise
        (npplm.layers.sequence_classification_loss).
        """
        h = self.backbone(input_ids, attention_mask, None, position_ids).last_hidden_state
        last = last_token_positions(input_ids, self.config.pad_token_id)  # (B,)
        rows = np.arange(h.shape[0])
        xp = self.xp  # host positions -> the hidden states' device
        pooled = h[xp.asarray(rows), xp.asarray(last)]  # (B, T, C) -> (B, C)
        logits = self.score(pooled)  # (B, C) @ (C, num_labels) -> (B, num_labels)
        loss = None if labels is None else sequence_classification_loss(
            logits, labels, self.config.num_labels)
        return ModelOutput(loss=loss, logits=logits)

    def token_scores(self, input_ids, attention_mask=None):
        """(B, T, num_labels): the score head applied at every position, not only the last.
        Position t has read tokens 0..t, so with num_labels = 1 this is a critic's value
        V(s_t) of every prefix, as RLHF's value model reads it (npplm.alignment.ppo)."""
        h = self.backbone(input_ids, attention_mask, None, None).last_hidden_state  # (B, T, C)
        return self.score(h)  # (B, T, C) @ (C, num_labels) -> (B, T, num_labels)

    @classmethod
    def from_backbone(cls, source, num_labels=1, seed=0, **config_overrides):
        """A classifier (by default a reward model, num_labels=1) whose backbone is copied
        from `source`: a model object of the family (its LM head, bare backbone or another
        classifier) or a checkpoint folder of one (a causal LM's, typically).

        The score layer is drawn from `seed`, N(0, initializer_range^2), as transformers
        initialises a head missing from the checkpoint. config_overrides replace config
        fields, e.g. pad_token_id for batches (GPT-2 configs have none). The weights are
        copies, in the source model's dtype; the model is returned in training mode.
        """
        if isinstance(source, PreTrainedModel):
            if not isinstance(source.config, cls.config_class):
                raise TypeError(f"{cls.__name__}.from_backbone needs a model with a "
                                f"{cls.config_class.__name__}, got a {type(source).__name__}")
            config, dtype = source.config, source.dtype
            state = getattr(source, cls.base_model_prefix, source).checkpoint_state()
        else:
            config, dtype = cls.config_class.from_hf(read_config(source)), None
            state = read_weights(source)
        config = dataclasses.replace(config, num_labels=num_labels, **config_overrides)
        model = cls(config, seed=seed)
        if dtype is not None:
            model.astype(dtype)
        # The backbone's load_weights strips the head's prefix and drops the LM head's keys.
        model.backbone.load_weights(state)
        return model
