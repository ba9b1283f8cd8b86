"""Generic layers shared by the model families: functions hold the math, modules own
parameters and call the functions.

    linear.py          Linear, linear()
    embedding.py       Embedding, check_ids()
    normalization.py   LayerNorm, RMSNorm, and the fused layer_norm / rms_norm primitives
    activations.py     fused gelu, gelu_tanh, silu primitives; activation(name)
    dropout.py         Dropout
    gradient_scale.py  grad_scale: identity forward, gradient times alpha (GLM's shrink)
    attention.py       split_heads, merge_heads, padding_mask, causal_mask, attention(),
                       CausalMask and the fused causal_attention primitive
    rotary.py          RoPE: rope_frequencies (incl. LLaMA-3 scaling), rope_cos_sin, apply_rotary
"""

import autograd.ops.nn
import gpu.cuda_kernels
import gpu.kernels.softmax
from npplm.layers.activations import activation, gelu, gelu_tanh, silu
from npplm.layers.attention import (
    CausalMask,
    attention,
    causal_attention,
    causal_mask,
    merge_heads,
    padding_mask,
    split_heads,
)
from npplm.layers.dropout import Dropout
from npplm.layers.embedding import Embedding, check_ids
from npplm.layers.gradient_scale import grad_scale
from npplm.layers.linear import Linear, linear
from npplm.layers.normalization import LayerNorm, RMSNorm, layer_norm, rms_norm
from npplm.layers.rotary import apply_rotary, rope_cos_sin, rope_frequencies

# The engine's softmax, log_softmax and cross_entropy run Numba kernels from here on: on
# large float32 NumPy arrays, and on float32 CuPy arrays (the engine imports nothing from
# gpu/).
autograd.ops.nn.use_kernels(gpu.kernels.softmax, gpu.cuda_kernels.ROWS)

__all__ = [
    "CausalMask", "Dropout", "Embedding", "LayerNorm", "Linear", "RMSNorm", "activation",
    "attention", "causal_attention", "causal_mask", "check_ids", "gelu", "gelu_tanh",
    "grad_scale", "layer_norm", "linear", "merge_heads", "padding_mask", "rms_norm", "silu",
    "split_heads", "apply_rotary", "rope_cos_sin", "rope_frequencies",
]
