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
builds one on the right device (npplm.generation).

Devices. Integer bookkeeping (ids, positions, masks) is done on the host, in NumPy; a model
moves what it computes from it to its weights' device with one `self.xp.asarray` where it
meets the weights. `xp` and `dtype` below say where and what the weights are.

The files themselves (safetensors, config.json, shards) are read and written by npplm.io;
`npplm.from_pretrained` (npplm/models/__init__.py) picks the class a folder names.
"""

import re

from autograd import array_module
from npplm.generation import KVCache
from npplm.io import CheckpointError, read_config, read_weights, write_pretrained
from npplm.layers import Module


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

    def new_cache(self, batch_size, max_length):
        """An empty KVCache for batch_size rows of up to max_length positions, in the
        weights' dtype and on their device (npplm.generation.kv_cache)."""
        n_layers, n_kv_heads, head_dim = self.kv_cache_layout()
        return KVCache(n_layers, batch_size, n_kv_heads, head_dim, max_length, self.dtype,
                       xp=self.xp)

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
