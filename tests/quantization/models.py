"""Tiny quantised models for tests: a model's Linear and Embedding weights quantised by our
quantiser and swapped for QuantizedLinear / QuantizedEmbedding, beside the float32 model of
the dequantised weights that it must equal."""

import numpy as np

from npplm.layers import no_init
from npplm.quantization import formats
from npplm.quantization.linear import PackedWeight, quantize_modules


def packed_of(w, kind):
    """A float32 weight (R, C) quantised to `kind` by our quantiser, packed."""
    raw = formats.quantize(np.asarray(w, np.float32), kind)
    return PackedWeight.pack(kind, *formats.unpack(raw, kind, w.shape))


def dequantized(w, kind):
    return formats.dequantize(formats.quantize(np.asarray(w, np.float32), kind), kind, w.shape)


def quantized_twin(cls, config, kinds, activations="float32"):
    """(quantised, reference): a `cls(config)` whose weights named in `kinds` ({"q_proj":
    "Q4_K", ...}, matched as ".q_proj." in the key) are kept in blocks, and the float32
    model of the same dequantised weights; both in eval mode."""
    model = cls(config).eval()
    packed, state = {}, model.state_dict(remove_duplicates=True)
    for key, w in state.items():
        kind = next((k for part, k in kinds.items() if f".{part}." in key
                     and key.endswith(".weight")), None)  # biases stay float32
        if kind:
            packed[key] = packed_of(w, kind)
            state[key] = dequantized(w, kind)
    reference = cls(config).load_weights(state).eval()
    with no_init():
        quantized = cls(config)
    quantize_modules(quantized, packed, activations)
    quantized.load_weights({k: v for k, v in state.items() if k not in packed})
    return quantized.eval(), reference
